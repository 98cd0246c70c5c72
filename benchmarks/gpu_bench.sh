#!/usr/bin/env bash
# GPU benchmark for issue 8: JAX vs PyTorch eager vs torch.compile on the paper-size FPR
# (DenseUNet3D, configs/default.py c.fpr, 64^3), same weights, fp32 and bf16, 20-step L-inf
# PGD and the training step, one JSON per dtype in $OUT. Budget: ~6 min on one H100
# (each worker capped at 100 s, each dtype at 210 s: at most 7 min; torch.compile runs last).
#
# Run (lead, device tool), from the repo root:
#   run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"], timeout_s=480)
#
# What the image has (/work/.library/device/KINDS.md): python3 = /opt/torch/.venv (Python
# 3.12) with torch 2.11 (cu130), jax 0.11.2 + jax-cuda13-plugin, flax, optax, numpy, absl-py.
# Missing there: ml_collections (configs/). Prepare its wheel HERE before the run:
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl ml_collections==1.1.0
# If jax[cuda] were missing there, add to .whl (same command): jax==0.10.2 jaxlib==0.10.2
# jax-cuda12-plugin==0.10.2 jax-cuda12-pjrt==0.10.2 plus the nvidia-*-cu12 wheels its
# METADATA lists (unzip -p .whl/jax_cuda12_plugin-*.whl '*/METADATA' | grep ^Requires-Dist);
# the install line below then picks them up.
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-/tmp/gpu_bench_out}; mkdir -p "$OUT"
PY=${PY:-python3}
if ! $PY -c "import ml_collections" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || { echo "wheel install failed"; exit 1; }
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import jax, torch, flax; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__, 'flax', flax.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
B=${B:-32}
for DT in float32 bfloat16; do
  echo "=== $DT batch $B ($(date +%T)) ==="
  timeout 210 $PY benchmarks/pgd_throughput.py --config paper --size 64 --batch "$B" --steps 20 \
      --repeats 3 --dtype "$DT" --impl auto --what pgd,train --worker-timeout 100 \
      --json "$OUT/gpu_paper64_${DT}.json" 2>&1 | tee "$OUT/log_${DT}.txt"
done
echo "done $(date +%T)"
