"""Where the JAX FPR train step's process memory goes: RSS and its high-water mark
(``VmRSS`` / ``VmHWM`` of ``/proc/self/status``, MB) after import, lowering, compilation
and the first steps, XLA's temporaries per device, and the largest ``/proc/self/smaps``
regions after compilation (Linux only).

    python benchmarks/train_step_memory.py --config configs/demo.py --size 32 --batch 8

The step is the project's FPR train step (``nodulejax.train.fpr.make_fpr_step`` through
``common.fpr_train_step``): DenseUNet3D from ``config.fpr`` (``--config``: demo, paper or a
config file), Adam, the train state donated, the batch split over the host devices
(``--cpu-devices``). Memory does not depend on the machine's load; the seconds per step do.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import common

ROOT = common.ROOT


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _largest_mappings(top: int = 4) -> list:
    """[(mapping, RSS MB)] of ``/proc/self/smaps``, anonymous regions summed as ``[anon]``."""
    rss, cur = collections.Counter(), "[anon]"
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "Rss:":
                rss[cur] += int(parts[1])
            elif parts and "-" in parts[0] and ":" not in parts[0]:
                cur = parts[5] if len(parts) > 5 else "[anon]"
    return [(k, round(v / 1024)) for k, v in rss.most_common(top)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    ap.add_argument("--size", type=int, default=32, help="patch side, voxels")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    ap.add_argument("--cpu-devices", default="auto", help="host devices ('auto': one per core)")
    ap.add_argument("--malloc-trim", action="store_true",
                    help="glibc malloc_trim(0) after compiling (memory freed but kept by malloc)")
    ap.add_argument("--conv-impl", default="auto", help="layers.Conv3D lowering (auto, xla3d, "
                    "2d, 2dcat)")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from nodulejax.runtime import devices, memory

    devices.configure_cpu_devices(a.cpu_devices if a.cpu_devices == "auto"
                                  else int(a.cpu_devices))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from nodulejax.models import denseunet, layers

    cfg = common.load_config(a.config)
    layers.set_default_conv_impl(a.conv_impl)
    model = denseunet.from_config(cfg.fpr)
    x = jnp.asarray(np.random.default_rng(0).uniform(
        0, 1, (a.batch, a.size, a.size, a.size, 1)).astype(np.float32))
    init = jax.jit(lambda k: model.init(k, x[:1]))(jax.random.key(0, impl="rbg"))
    opt = optax.adam(1e-3)
    state = common.fpr_train_state({"params": init["params"]}, opt)
    rows = {"imported and initialised": (_status_mb("VmRSS"), _status_mb("VmHWM"))}

    batch = common.fpr_batch(x, (jnp.arange(a.batch) % 2).astype(jnp.float32))
    mesh = devices.mesh_for(a.batch)
    if mesh is not None and mesh.size > 1:
        state = devices.replicate(state, mesh)
        batch = devices.put_batch(batch, mesh)
    lowered = jax.jit(common.fpr_train_step(model, opt), donate_argnums=(0,)).lower(state, batch)
    rows["lowered"] = (_status_mb("VmRSS"), _status_mb("VmHWM"))
    step = lowered.compile()
    rows["compiled"] = (_status_mb("VmRSS"), _status_mb("VmHWM"))
    if a.malloc_trim:
        memory.release_freed()
        rows["malloc_trim(0)"] = (_status_mb("VmRSS"), _status_mb("VmHWM"))
    mappings = _largest_mappings()
    ma = step.memory_analysis()
    state, loss = step(state, batch)
    loss.block_until_ready()
    rows["first step"] = (_status_mb("VmRSS"), _status_mb("VmHWM"))
    t0 = time.perf_counter()
    for _ in range(a.steps):
        state, loss = step(state, batch)
        loss.block_until_ready()
    sec = (time.perf_counter() - t0) / max(a.steps, 1)
    rows[f"after {a.steps + 1} steps"] = (_status_mb("VmRSS"), _status_mb("VmHWM"))
    out = {"size": a.size, "batch": a.batch, "devices": jax.local_device_count(),
           "jax": jax.__version__, "rss_peak_mb": {k: [round(r), round(p)] for k, (r, p)
                                                  in rows.items()},
           "temp_mib_per_device": round(ma.temp_size_in_bytes / 2**20, 1) if ma else None,
           "largest_mappings_after_compile_mb": mappings, "seconds_per_step": round(sec, 3)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
