"""Host input-pipeline throughput: FPR patch batches/s with and without the prefetcher.

    python benchmarks/input_pipeline.py [--root DIR] [--patch 32] [--batch 16] [--steps 60]
        [--spacing 1.0] [--step-ms 20] [--depth 2] [--workers 2]

Builds the FPR patch set (``patchsets.fpr_patches``) of a phantom (generated into a temporary
folder unless ``--root`` names a LUNA16-layout folder), then times batch assembly: the
BalancedSampler's 50/50 positive/negative batch (paper Section 3.1), patch gather, per-example
flips / 90-degree rotations (``patches.random_flip_rot``), float32 + channel axis, and
``jax.device_put``. A consumer stands in for the train step by spending ``--step-ms`` per
batch (a jitted reduction on the batch plus sleeping the rest, so the host thread is free as
it is while a real accelerator step runs). Reported: producer-only batches/s (no consumer),
and steps/s of the consumer loop with ``Prefetcher(depth=0)`` (inline) vs ``depth=--depth``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.data import luna16, prepare
from nodulejax.data.patches import random_flip_rot
from nodulejax.data.patchsets import fpr_patches
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.train.sampler import BalancedSampler, Prefetcher


def make_batch_fn(p: dict, batch: int, seed: int):
    pos, neg = np.flatnonzero(p["y"] == 1), np.flatnonzero(p["y"] == 0)
    sampler = BalancedSampler([len(pos), len(neg)], [0.5, 0.5], batch, seed)
    groups = (pos, neg)

    def fn(step: int):
        b = sampler.batch(step)
        rows = np.array([groups[g][i] for g, i in zip(b.group, b.index, strict=True)])
        x = np.stack([random_flip_rot(p["x"][r].astype(np.float32), int(s))
                      for r, s in zip(rows, b.seed, strict=True)])[..., None]
        return jax.device_put(x), jax.device_put(p["y"][rows])

    return fn


def run(fn, steps: int, depth: int, workers: int, step_s: float, consume) -> float:
    t0 = None
    with Prefetcher(fn, 0, steps + 2, depth=depth, num_workers=workers) as it:
        for k, (x, _y) in enumerate(it):
            if k == 2:  # skip warm-up (jit, thread start)
                t0 = time.perf_counter()
            if step_s > 0:
                t = time.perf_counter()
                consume(x).block_until_ready()
                rest = step_s - (time.perf_counter() - t)
                if rest > 0:
                    time.sleep(rest)
            else:
                x.block_until_ready()
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="")
    ap.add_argument("--num-scans", type=int, default=4)
    ap.add_argument("--spacing", type=float, default=1.0)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--step-ms", type=float, default=20.0)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    tmp = None
    root = args.root
    if not root:
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
        generate_dataset(root, args.num_scans, seed=0, size_scale=0.4,
                         num_subsets=args.num_scans, max_voxels=1_000_000)
    t = time.perf_counter()
    ds = luna16.Luna16Dataset(root)
    scans = prepare.prepare_folds(ds, sorted({ds.fold_of(u) for u in ds.uids()}),
                                  spacing=args.spacing, window=(-1000.0, 400.0))
    p = fpr_patches(scans, args.patch)
    t_prep = time.perf_counter() - t
    fn = make_batch_fn(p, args.batch, seed=0)
    consume = jax.jit(lambda x: jnp.mean(x * x))
    res = {
        "device": str(jax.devices()[0]),
        "examples": int(len(p["y"])), "positives": int(p["y"].sum()),
        "prepare_s": round(t_prep, 2),
        "producer_only_batches_per_s": run(fn, args.steps, 0, 1, 0.0, consume),
        "producer_only_prefetch_batches_per_s":
            run(fn, args.steps, args.depth, args.workers, 0.0, consume),
        "steps_per_s_no_prefetch": run(fn, args.steps, 0, 1, args.step_ms / 1e3, consume),
        "steps_per_s_prefetch": run(fn, args.steps, args.depth, args.workers,
                                    args.step_ms / 1e3, consume),
        "step_ms": args.step_ms, "patch": args.patch, "batch": args.batch,
        "depth": args.depth, "workers": args.workers,
    }
    res["consumer_bound_steps_per_s"] = 1e3 / args.step_ms if args.step_ms > 0 else None
    for k, v in res.items():
        print(f"{k:40s} {v:.2f}" if isinstance(v, float) else f"{k:40s} {v}")
    if tmp is not None:
        tmp.cleanup()
    return res


if __name__ == "__main__":
    main()
