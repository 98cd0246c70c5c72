"""Tiny training run through ``nodulejax.train.loop.fit`` for the subprocess tests.

Run from the repo root: ``python tests/train/fit_script.py --workdir W --steps 12 --out p.npz``.
``--ready-file F --stop-at S``: after step S write F and wait while F exists (the test
SIGKILLs us, or sends SIGTERM and removes F so that the loop sees the signal).
The run under test uses WORKDIR/run and a mesh over all devices (run with XLA_FLAGS
forcing 8 host devices). ``--compare-devices N`` then also trains fresh, uninterrupted
copies on 1 and N devices and writes their params to OUT.fresh.npz.
"""

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from nodulejax.runtime import sharding  # noqa: E402
from nodulejax.train.loop import fit  # noqa: E402
from nodulejax.train.sampler import BalancedSampler  # noqa: E402

DIM, HIDDEN, N = 8, 16, 96


def make_config(lr=1e-2, width=HIDDEN, batch=8):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.fpr = ml_collections.ConfigDict({"lr": lr, "width": width, "batch_size": batch,
                                       "steps": 12})
    c.ckpt = ml_collections.ConfigDict({"every": 4, "keep": 2})
    c.train = ml_collections.ConfigDict({"log_every": 3, "multi_host": False})
    c.data = ml_collections.ConfigDict({"prefetch": 2, "num_workers": 1})
    return c


def dataset():
    rng = np.random.default_rng(123)
    x = rng.normal(size=(N, DIM)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    return x, y


def init_state(cfg):
    return _init_fn(cfg.fpr.width)(cfg.seed), optax.adam(cfg.fpr.lr)


@functools.cache
def _init_fn(width):
    tx = optax.adam(1.0)  # the Adam state's structure and values do not depend on lr

    @jax.jit
    def init(seed):
        k1, k2 = jax.random.split(jax.random.key(seed))
        params = {
            "w1": jax.random.normal(k1, (DIM, width)) * 0.3,
            "b1": jnp.zeros(width),
            "w2": jax.random.normal(k2, (width,)) * 0.3,
            "b2": jnp.zeros(()),
        }
        return {"params": params, "opt": tx.init(params)}

    return init


def make_train_step(tx):
    def loss_fn(p, x, y):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        return optax.sigmoid_binary_cross_entropy(logits, y).mean()

    def train_step(state, batch, key):
        x = batch["x"] + 0.1 * jax.random.normal(key, batch["x"].shape)  # uses the step key
        loss, g = jax.value_and_grad(loss_fn)(state["params"], x, batch["y"])
        upd, opt = tx.update(g, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], upd), "opt": opt}, {"loss": loss}

    return train_step, loss_fn


def make_batch_fn(cfg):
    x, y = dataset()
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    sampler = BalancedSampler([len(pos), len(neg)], [0.5, 0.5], cfg.fpr.batch_size, cfg.seed)

    def batch_fn(i):
        b = sampler.batch(i)
        idx = np.where(b.group == 0, pos[b.index % len(pos)], neg[b.index % len(neg)])
        return {"x": x[idx], "y": y[idx]}

    return batch_fn


def run(args, cfg, mesh=None, workdir=None, on_step=None):
    state, tx = init_state(cfg)
    train_step, loss_fn = make_train_step(tx)
    x, y = dataset()
    eval_loss = jax.jit(loss_fn)

    def eval_fn(st, step):
        return {"loss": float(eval_loss(st["params"], x, y))}

    return fit(train_step, state, make_batch_fn(cfg), num_steps=args.steps,
               workdir=workdir or args.workdir, model_name="tiny", config=cfg,
               key=jax.random.key(42), eval_fn=eval_fn, eval_every=4, best_metric="loss",
               best_mode="min", mesh=mesh, progress=False, on_step=on_step,
               prefetch=args.prefetch)


def compare(args, cfg):
    """Fresh, uninterrupted runs on 1 and ``--compare-devices`` devices -> OUT.fresh.npz."""
    out = {"init_w1": np.asarray(init_state(cfg)[0]["params"]["w1"])}
    for n in (1, args.compare_devices):
        mesh = sharding.make_mesh(jax.devices()[:n])
        r = run(args, cfg, mesh=mesh, workdir=os.path.join(args.workdir, f"fresh{n}"))
        out[f"n{n}_ndev"] = np.int64(len(r.state["params"]["w1"].sharding.device_set))
        for k, v in r.state["params"].items():
            out[f"n{n}_{k}"] = np.asarray(v)
    np.savez(args.out + ".fresh.npz", **out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--out", default="")
    ap.add_argument("--ready-file", default="")
    ap.add_argument("--stop-at", type=int, default=-1)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--compare-devices", type=int, default=0)
    args = ap.parse_args()
    cfg = make_config(lr=args.lr)

    def on_step(step, state):
        if step == args.stop_at and args.ready_file:
            jax.block_until_ready(state)
            with open(args.ready_file, "w") as f:
                f.write(str(step))
            while os.path.exists(args.ready_file):  # SIGKILL comes now; SIGTERM then unlink
                time.sleep(0.02)

    # the run under test, in WORKDIR (all devices), resuming whatever is there
    r = run(args, cfg, workdir=os.path.join(args.workdir, "run"), on_step=on_step)
    if args.out:
        np.savez(args.out, **{k: np.asarray(v) for k, v in r.state["params"].items()})
        with open(args.out + ".json", "w") as f:
            json.dump({"resumed_from": r.resumed_from, "step": r.step,
                       "best_step": r.best_step, "steps_per_sec": r.steps_per_sec}, f)
    if args.compare_devices:
        compare(args, cfg)


if __name__ == "__main__":
    main()
