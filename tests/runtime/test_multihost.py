"""Several hosts for real: two ``jax.distributed`` processes on this machine.

The test starts this file as a script twice (process ids 0 and 1, coordinator on
127.0.0.1 at a free port, CPU backend, one host device per process) with
``config.train.multi_host=True``: each process calls ``jax.distributed.initialize()`` through
``nodulejax.runtime.sharding.initialize_distributed`` (the ``JAX_COORDINATOR_ADDRESS`` /
``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` variables of the README) and trains the FPR
(segmentation pretraining, then the baseline-ce classifier) a few steps with the global batch
split across the two. The final parameters must equal a one-process run of the same global
batch on two host devices (the same split, within float tolerance), and the checkpoints the
pair wrote must resume in one process: continuing them gives the parameters of the
one-process run continued the same way.

Script use: ``python tests/runtime/test_multihost.py --workdir W --steps N --out params.npz``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two jax.distributed processes training: minutes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG_STEPS, STEPS, MORE = 2, 4, 2
TIMEOUT = 420
LOCAL_BATCHES: list[int] = []


def tiny_fpr_config(steps: int, multi_host: bool):
    """configs/tiny.py with a global FPR batch of 4, no augmentation, no early stop."""
    from configs import tiny

    c = tiny.get_config()
    c.train.multi_host = multi_host
    c.train.progress = False
    c.fpr.batch_size = 4
    c.fpr.steps = steps
    c.fpr.seg_pretrain_steps = SEG_STEPS
    c.fpr.eval_every = 2
    c.fpr.augment = False
    c.fpr.early_stop_patience = 0
    c.ckpt.every = 2
    c.ckpt.async_save = False
    return c


def synthetic_patches(p: int):
    """Deterministic stand-ins for the prepared patches: (seg, fpr train, fpr val) dicts."""
    rng = np.random.default_rng(3)
    n = 16
    x = rng.normal(size=(n, p, p, p)).astype(np.float16)
    y = (np.arange(n) % 2).astype(np.int32)
    x[y == 1, p // 2 - 2:p // 2 + 2, p // 2 - 2:p // 2 + 2, p // 2 - 2:p // 2 + 2] += 2.0
    mask = np.zeros_like(x, dtype=np.float32)
    mask[:, p // 2 - 2:p // 2 + 2, p // 2 - 2:p // 2 + 2, p // 2 - 2:p // 2 + 2] = 1.0
    fpr = {"x": x, "y": y, "scan": np.zeros(n, np.int32), "zyx": np.zeros((n, 3), np.float32)}
    return {"x": x[y == 1], "mask": mask[y == 1]}, fpr, fpr


def worker(args) -> None:
    """One process: initialise (multi-host when JAX_PROCESS_ID is set), train, save params."""
    sys.path.insert(0, ROOT)
    multi = "JAX_PROCESS_ID" in os.environ
    cfg = tiny_fpr_config(args.steps, multi)
    from nodulejax.runtime import checkpoint, devices, sharding
    from nodulejax.train import fpr

    devices.configure_cpu_devices(1 if multi else 2)
    assert sharding.initialize_distributed(cfg) == multi
    import jax

    print(f"process {jax.process_index()}/{jax.process_count()}: {len(jax.devices())} devices,"
          f" {len(jax.local_devices())} local", flush=True)
    real_shard = sharding.shard_batch

    def recording_shard(tree, mesh):  # what this process feeds: its share of the batch
        LOCAL_BATCHES.extend(int(np.shape(x)[0]) for x in jax.tree.leaves(tree))
        return real_shard(tree, mesh)

    sharding.shard_batch = recording_shard
    seg, train, val = synthetic_patches(int(cfg.fpr.patch_size))
    fpr.train_fpr_seg(cfg, args.workdir, [], patches=seg)
    fpr.train_fpr_experiment(cfg, args.workdir, "baseline-ce", [], [], train_patches=train,
                             val_patches=val)
    # every process restores (orbax synchronises the hosts); process 0 writes the file
    params = checkpoint.load_params(args.workdir, fpr.model_name("baseline-ce"), "latest")
    print(f"process {jax.process_index()}: local batch sizes {sorted(set(LOCAL_BATCHES))}",
          flush=True)
    if jax.process_index() == 0:
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        np.savez(args.out, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})
    if multi:
        jax.distributed.shutdown()


# ------------------------------------------------------------------------------ the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def _cmd(workdir, steps, out):
    return [sys.executable, os.path.abspath(__file__), "--workdir", str(workdir),
            "--steps", str(steps), "--out", str(out)]


def _one(workdir, steps, out):
    r = subprocess.run(_cmd(workdir, steps, out), cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout


def _pair(workdir, steps, out):
    port = _free_port()
    procs = []
    for i in range(2):
        env = _env({"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                    "JAX_PROCESS_ID": str(i)})
        procs.append(subprocess.Popen(_cmd(workdir, steps, out), cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (so, se) in zip(procs, outs, strict=True):
        assert p.returncode == 0, so[-2000:] + se[-4000:]
    return "".join(so for so, _ in outs)


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _assert_close(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_two_processes_train_like_one_and_resume_in_one(tmp_path):
    single, pair = tmp_path / "single", tmp_path / "pair"
    out = _pair(pair, STEPS, tmp_path / "pair.npz")
    assert "process 0/2: 2 devices, 1 local" in out and "process 1/2: 2 devices, 1 local" in out
    # each process fed half of the global batch of 4 (not the whole batch twice)
    assert "process 0: local batch sizes [2]" in out and "process 1: local batch sizes [2]" in out
    _one(single, STEPS, tmp_path / "single.npz")
    p4, s4 = _load(tmp_path / "pair.npz"), _load(tmp_path / "single.npz")
    _assert_close(p4, s4)
    # the pair's checkpoints resume in one process; so do the single run's
    _one(pair, STEPS + MORE, tmp_path / "pair_resumed.npz")
    _one(single, STEPS + MORE, tmp_path / "single_resumed.npz")
    _assert_close(_load(tmp_path / "pair_resumed.npz"), _load(tmp_path / "single_resumed.npz"))
    assert any(not np.allclose(_load(tmp_path / "pair_resumed.npz")[k], p4[k]) for k in p4)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--out", required=True)
    worker(ap.parse_args())
