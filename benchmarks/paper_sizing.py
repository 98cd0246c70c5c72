"""Seconds per training step of each paper-config network on this host, and the paper-scale
run's time per stage projected from them (issue 29, item 6: the README's sizing table).

    python benchmarks/paper_sizing.py [--config configs/paper.py] [--steps 2] [--fpr-batch 2]
        [--memory-json benchmarks/results/memory_scale_<date>.json]
        [--detect-json benchmarks/results/detect_scan_<date>.json] [--out benchmarks/results]

Measured here (jitted, one warm-up step for the compile, then the median of ``--steps``):
* ``cg``: the blob ResUNet's train step (``train.cg.heatmap_step``) at ``c.cg.input_size``^3,
  batch ``c.cg.batch_size`` (the all-nodule and the GGO stages run the same step);
* ``rpn``: the RPN's train step (``train.cg.rpn_step``), same crops;
* ``fpr``: the FPR's train step (``common.fpr_train_step``, the project's ``make_fpr_step``)
  at ``c.fpr.patch_size``^3, batch ``--fpr-batch`` (batch 16 of the paper does not fit a
  2-core host's memory; the projection scales the time linearly to ``c.fpr.batch_size``);
* ``synth``: the synthesizer's step (``train.synth.make_synth_step``: ``n_critic`` critic
  updates + one VAE update) at ``c.synth.patch_size``^3, batch ``c.synth.batch_size``;
* ``pgd``: a ``c.pgd.image_steps``-step image attack on the FPR (the pool's per-patch cost),
  batch ``--fpr-batch``, as patches/s.

The projection (:func:`project`) multiplies them by the paper config's step counts and the
LUNA16 sizes (888 scans, 1186 nodules; the pool's attacks as ``c.pool`` makes them, each at
the image attack's cost: a latent attack also runs the decoder); prepare and detection take
their per-scan seconds from ``memory_scale`` and ``detect_scan`` JSONs when given. It is a
projection of this host's throughput, not a measured run, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from common import fpr_train_state, fpr_train_step, load_config, run_record, write_result  # noqa: E402

#: LUNA16: scans and annotated nodules (annotations.csv), 10 subsets
LUNA16_SCANS, LUNA16_NODULES = 888, 1186


def pool_attacks(config) -> dict:
    """The pool's PGD-made patches on LUNA16 under ``config`` (``c.pool``; the training folds'
    share of the scans and nodules): ``{kind: count}``. Random synthetic samples need no
    attack and are left out (a decode and a score each)."""
    share = len(config.data.train_folds) / 10
    p = config.pool
    backgrounds = int(p.background_per_scan) * LUNA16_SCANS * share
    return {"synthetic, latent PGD": round(backgrounds * int(p.syn_pgd_per_background)),
            "perturbed positives": round(int(p.perturb_per_positive) * LUNA16_NODULES * share),
            "PGD noise": int(p.num_noise)}


def _time(fn, steps: int) -> float:
    """Median seconds of ``fn()`` over ``steps`` calls after one warm-up call."""
    fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def measure(config, steps: int, fpr_batch: int) -> dict:
    """Seconds per step of each network (module doc)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from nodulejax.adversarial.attacks import perturb_negatives
    from nodulejax.models.build import cg_model, fpr_model, rpn_model
    from nodulejax.train import cg as tcg
    from nodulejax.train import synth as tsy

    out = {}
    g, key = config.cg, jax.random.key(0)
    s, b = int(g.input_size), int(g.batch_size)
    x = jnp.asarray(np.random.default_rng(0).random((b, s, s, s, 1)), jnp.float32)
    boxes = jnp.tile(jnp.asarray([[s / 2, s / 2, s / 2, 10.0]], jnp.float32), (b, 1, 1))
    batch = {"image": x, "boxes": boxes, "valid": jnp.ones((b, 1), bool)}

    model = cg_model(config)
    raw = tcg.heatmap_step(model, float(g.lr), tcg.blob_sigma_vox(config))
    params = jax.jit(model.init)(key, x[:1])["params"]
    state, step = {"params": params, "opt_state": raw.tx.init(params)}, jax.jit(raw)
    out["cg"] = _time(lambda: jax.block_until_ready(step(state, batch, key)), steps)

    rmodel = rpn_model(config)
    rraw = tcg.rpn_step(rmodel, float(g.lr), s, tuple(float(a) for a in g.anchors_mm),
                        float(config.data.spacing))
    rparams = jax.jit(rmodel.init)(key, x[:1])["params"]
    rstate, rstep = {"params": rparams, "opt_state": rraw.tx.init(rparams)}, jax.jit(rraw)
    out["rpn"] = _time(lambda: jax.block_until_ready(rstep(rstate, batch, key)), steps)

    p = int(config.fpr.patch_size)
    fmodel = fpr_model(config)
    xf = jnp.asarray(np.random.default_rng(1).random((fpr_batch, p, p, p, 1)), jnp.float32)
    yf = jnp.asarray(np.arange(fpr_batch) % 2, jnp.int32)
    tx = optax.adam(1e-3)
    variables = jax.jit(fmodel.init)(key, xf[:1])
    fstep = jax.jit(fpr_train_step(fmodel, tx))
    fstate = fpr_train_state(variables, tx)
    out["fpr"] = _time(lambda: jax.block_until_ready(fstep(fstate, {"x": xf[..., 0], "y": yf})),
                       steps)
    out["fpr_batch"] = fpr_batch

    pg = config.pgd
    out["pgd_patches_per_s"] = fpr_batch / _time(lambda: jax.block_until_ready(
        perturb_negatives(key, fmodel, variables, xf, head=str(config.fpr.head),
                          eps=float(pg.image_eps), step_size=float(pg.image_step),
                          steps=int(pg.image_steps)).x_adv), steps)
    out["pgd_steps"] = int(pg.image_steps)

    sy = config.synth
    ps, bs = int(sy.patch_size), int(sy.batch_size)
    txv, txc = optax.adam(1e-4, b1=0.5, b2=0.9), optax.adam(1e-4, b1=0.5, b2=0.9)
    sstate = tsy.init_synth_state(config, jax.random.key(1, impl="rbg"), txv, txc)
    sstep = jax.jit(tsy.make_synth_step(config, txv, txc))
    xs = jnp.asarray(np.random.default_rng(2).random((bs, ps, ps, ps)), jnp.float32)
    out["synth"] = _time(lambda: jax.block_until_ready(sstep(sstate, {"x": xs}, key)), steps)
    return out


def project(config, m: dict, prepare_s_per_scan: float | None = None,
            detect_s_per_scan: float | None = None, workers: int = 1) -> list[dict]:
    """Hours per stage of the paper-scale run on LUNA16 from the measured ``m`` (module doc):
    ``[{"stage", "hours", "how"}]``."""
    from nodulejax.experiments import BASELINES, EXPERIMENTS

    g, f, sy = config.cg, config.fpr, config.synth
    fpr_step = m["fpr"] * int(f.batch_size) / m["fpr_batch"]
    names = set(BASELINES) | set(tuple(config.train.rows) or tuple(EXPERIMENTS))  # + baselines
    rows = [EXPERIMENTS[r] for r in names]
    n_base = sum(1 for r in rows if r["stage"] == "fpr")
    n_fine = sum(1 for r in rows if r["stage"] == "fpr_finetune")
    n_aug = sum(1 for r in rows if r["stage"] == "fpr_augmented")
    n_test = LUNA16_SCANS * len(config.data.test_folds) / 10
    pool = sum(pool_attacks(config).values())
    out = []
    if prepare_s_per_scan is not None:
        out.append({"stage": "prepare", "hours": LUNA16_SCANS * prepare_s_per_scan / workers
                    / 3600, "how": f"888 scans x {prepare_s_per_scan:.0f} s / {workers} worker(s)"})
    out.append({"stage": "cg", "hours": ((int(g.steps) + int(g.ggo_steps)) * m["cg"]
                                         + int(g.rpn_steps) * m["rpn"]) / 3600,
                "how": f"({g.steps} + {g.ggo_steps}) x {m['cg']:.1f} s + {g.rpn_steps} x "
                       f"{m['rpn']:.1f} s"})
    out.append({"stage": "fpr_seg + fpr", "hours": (
        int(f.seg_pretrain_steps) + n_base * int(f.steps) + n_fine * int(f.finetune_steps))
        * fpr_step / 3600,
                "how": f"({f.seg_pretrain_steps} + {n_base} rows x {f.steps} + {n_fine} x "
                       f"{f.finetune_steps}) x {fpr_step:.1f} s (batch {f.batch_size})"})
    out.append({"stage": "synth", "hours": int(sy.steps) * m["synth"] / 3600,
                "how": f"{sy.steps} x {m['synth']:.1f} s"})
    out.append({"stage": "pool", "hours": pool / m["pgd_patches_per_s"] / 3600,
                "how": f"{pool:,} patches / {m['pgd_patches_per_s']:.3f} patches/s "
                       f"({m['pgd_steps']}-step PGD)"})
    out.append({"stage": "augmented", "hours": n_aug * int(f.finetune_steps) * fpr_step / 3600,
                "how": f"{n_aug} rows x {f.finetune_steps} x {fpr_step:.1f} s"})
    if detect_s_per_scan is not None:
        out.append({"stage": "detect", "hours": n_test * detect_s_per_scan / 3600,
                    "how": f"{n_test:.0f} test scans x {detect_s_per_scan:.0f} s"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "paper.py"),
                    help="a config file (default configs/paper.py: the paper's networks and "
                         "0.625 mm) or a name of common.CONFIGS")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--fpr-batch", type=int, default=2)
    ap.add_argument("--memory-json", default=None)
    ap.add_argument("--detect-json", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)


    config = load_config(a.config)
    m = measure(config, a.steps, a.fpr_batch)
    prep = det = None
    if a.memory_json:
        with open(a.memory_json) as fh:
            res = json.load(fh)["results"]
        n = max(res, key=int)
        prep = res[n]["prepare"]["seconds"] / int(n)
    if a.detect_json:
        with open(a.detect_json) as fh:
            det = json.load(fh)["runs"][-1]["seconds"]
    proj = project(config, m, prep, det, int(config.data.num_workers))
    doc = run_record("paper_sizing", a, seconds_per_step=m, projection=proj)
    path = write_result(a.out, doc)
    for r in proj:
        print(f"{r['stage']:14s} {r['hours']:10.1f} h   {r['how']}")
    print(json.dumps({"written": path, "seconds_per_step": m}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
