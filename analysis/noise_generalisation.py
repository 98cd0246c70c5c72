"""Do the augmented FPR models reject adversarial noise, or only the noise patches they saw?

Table 6's "PGD noise" column scores fresh adversarial-noise patches (attack 3: uniform noise
pushed by PGD within ``c.pgd.noise_eps`` to make ``c.stress.attack_target`` fire, keys of the
``stress/noise`` stream). The augmented rows with ``perturb`` were fine-tuned on the pool's
adversarial-noise patches (the same attack on the same target, keys of the ``pool/noise``
stream; Section 4) labelled negative. This probe scores each model on

* ``pool_noise``: those training patches themselves (``WORKDIR/pool``, kind ``noise``),
* ``fresh_noise``: as many fresh ones made the way Table 6 makes them (its column, re-made),
* ``uniform_noise``: Table 6's "Uniform noise" patches (same keys, no attack),

and gives how often the fine-tune drew each pool noise patch (steps x batch x the noise
group's share / pool size). A model that scores its own pool noise low and fresh noise high
has learnt the patches, not the attack; one that scores both high rejects neither.
Mean scores with a 95% bootstrap CI (patches resampled), n per cell. Every noise
patch gets nearly the same score (the classifier pools its features over the whole patch),
so these patch intervals are narrow and say nothing about other training runs: the
between-seed spread of ``claims.json`` does (``config.train.finetune_seeds``).

``orientation``: the attack target's mean score of up to 32 patches of each pool kind as
stored and under each of the 47 other cube symmetries (flips and 90-degree rotations). A PGD
perturbation is tuned to the kernels in one orientation, so a symmetry undoes it: this is
why pool patches reach the loss untransformed (``train.augment``).

``--train_steps N`` also re-runs, from the attack target's weights, ``N`` steps of the
``beta+perturb`` fine-tune on the batches its stage really trains on
(``train.fpr.fine_tune_data``: real and perturbed positives, real negatives, the pool noise
as stored; ``c.fpr.lr``, Adam, the Beta loss) and ``N`` steps on batches of pool noise alone
(label 0), and reports after every quarter the mean score of the pool noise, of the real
training negatives and of the real training positives (up to 512 of each, evenly spaced).

    python analysis/noise_generalisation.py --config configs/demo.py --workdir runs/demo \\
        [--models baseline-beta-finetune,beta+perturb,beta+perturb+syn] [--train_steps 240] \\
        [--json out.json]

Needs a finished study's ``fpr``, ``pool`` and ``augmented`` stages. Prints one JSON line.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from nodulejax.runtime.cli import print_json_line, run_main  # noqa: E402

NEEDED_STAGES = ("fpr", "pool", "augmented")
DEFAULT_MODELS = ("baseline-beta-finetune,beta+perturb,beta+perturb+syn,beta+poisson,"
                  "beta+syn")


def _define(fv):
    flags.DEFINE_string("workdir", None, "finished study run folder (pool and augmented "
                        "stages done)", flag_values=fv)
    flags.DEFINE_string("models", DEFAULT_MODELS, "comma-separated Table 3 rows",
                        flag_values=fv)
    flags.DEFINE_integer("resamples", 1000, "bootstrap resamples per cell", flag_values=fv)
    flags.DEFINE_integer("train_steps", 0, "also trace this many fine-tune steps (0: none)",
                         flag_values=fv)
    flags.DEFINE_integer("trace_kl_steps", -1, "KL ramp of the trace's Beta loss: -1 the row's "
                         "own (weight 1 from the first step), T > 0 weight min(1, step / T) "
                         "(a control: a large T keeps the KL term near 0)", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result here", flag_values=fv)
    return ["workdir"]


def mean_ci(p, resamples: int, seed: int = 0) -> dict:
    """Mean of scores ``p`` (N,) with its 95% patch-bootstrap interval, the claims' own
    resampling (``evaluation.bootstrap.paired_means`` and ``interval``)."""
    import numpy as np

    from nodulejax.evaluation.bootstrap import interval, paired_means

    p = np.asarray(p, np.float64)
    lo, hi = interval(paired_means({"p": p}, int(resamples), seed)["p"])
    return {"mean": round(float(p.mean()), 4), "ci": [round(lo, 4), round(hi, 4)],
            "n": int(len(p))}


def radial_profile(x, width: float = 2.0) -> list[dict]:
    """Mean intensity of patches ``x`` (N, P, P, P) in shells of ``width`` voxels around the
    patch centre: ``[{"r": [lo, hi], "mean"}, ...]``. Uniform noise is 0.5 in every shell; a
    nodule hidden in the noise shows as a brighter centre. ``x`` may be a lazy pool array
    (``PoolReader.arrays``): it is read 256 patches at a time, the rows summed in order in
    float32 as ``np.mean(axis=0)`` does (same bits)."""
    import numpy as np

    if len(x) == 0:
        return []
    total = None
    for i in range(0, len(x), 256):
        for row in np.asarray(x[i:i + 256], np.float32):
            total = row.copy() if total is None else np.add(total, row, out=total)
    m = (total.astype(np.float64) / len(x)).astype(np.float32)
    c = (m.shape[0] - 1) / 2.0
    g = np.meshgrid(*(np.arange(n) for n in m.shape[:3]), indexing="ij")
    r = np.sqrt(sum((a - c) ** 2 for a in g))
    out = []
    for lo in np.arange(0.0, float(r.max()) + width, width):
        sel = (r >= lo) & (r < lo + width)
        if sel.any():
            out.append({"r": [float(lo), float(lo + width)],
                        "mean": round(float(m[sel].mean()), 4)})
    return out


def draws_per_pool_patch(config, row: dict, pool_size: int) -> float:
    """Expected number of times the fine-tune of ``row`` drew each pool noise patch."""
    from nodulejax.train.augment import group_ratios

    share = group_ratios(config, row)[4]  # the adversarial-negative group's share of a batch
    steps = int(config.fpr.finetune_steps)
    return steps * int(config.fpr.batch_size) * share / max(pool_size, 1)


PROBE_PATCHES = 512  # real training patches per label scored along the trace


def fine_tune_trace(c, workdir: str, train_scans, target, pool_x, steps: int,
                    kl_steps: int = -1) -> dict:
    """From ``target``'s weights: ``steps`` steps of the beta+perturb fine-tune's own batches
    ("row") and of pool-noise-only batches ("noise_only"); mean scores of the pool noise, the
    real training negatives and positives at step 0 and after every quarter."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nodulejax.adversarial.attacks import score_patches
    from nodulejax.experiments import EXPERIMENTS, row_config
    from nodulejax.models.classifier import FPRHandle
    from nodulejax.train.fpr import (
        _tx,
        fine_tune_data,
        kl_anneal_steps_for,
        make_fpr_step,
        train_patch_set,
    )

    cfg = row_config(c, "beta+perturb")
    f, p, seed = cfg.fpr, int(cfg.fpr.patch_size), int(cfg.seed)
    jit = int(f.get("jitter_vox", 0)) if bool(f.augment) else 0
    real = train_patch_set(cfg, train_scans, workdir)  # the study's set, read from disk
    data = fine_tune_data(cfg, "beta+perturb", real, train_scans=train_scans,
                          pool_dir=os.path.join(workdir, "pool"))
    centre = (slice(None),) + (slice(jit, jit + p),) * 3

    def spread(label, n=PROBE_PATCHES):  # at most n patches, evenly spaced over the set
        rows = np.flatnonzero(real["y"] == label)
        return real["x"][rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]][
            centre]

    probes = {"pool_noise": pool_x, "real_negatives": spread(0), "real_positives": spread(1)}
    tx = _tx(float(f.lr))
    if kl_steps < 0:
        kl_steps = kl_anneal_steps_for(cfg, EXPERIMENTS["beta+perturb"], "fpr_augmented")
    step = jax.jit(make_fpr_step(target.model, tx, head="beta", kl_anneal_steps=kl_steps))
    rng = np.random.default_rng(seed)
    bs, out = int(f.batch_size), {}
    for mode in ("row", "noise_only"):
        params = target.variables["params"]
        state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
        trace = []
        for t in range(steps + 1):
            if t % max(steps // 4, 1) == 0 or t == steps:
                h = FPRHandle(target.model, {"params": state["params"]}, "beta")
                trace.append({"step": t, **{k: round(float(np.mean(score_patches(h, x, bs))), 4)
                                            for k, x in probes.items()}})
            if t == steps:
                break
            if mode == "row":
                batch = data.batch(t)
            else:
                i = rng.integers(0, len(pool_x), bs)
                batch = {"x": np.asarray(pool_x[i], np.float32), "y": np.zeros(bs, np.int32),
                         "kind": np.zeros(bs, np.int32)}
            state, _ = step(state, batch, jax.random.key(t))
        out[mode] = trace
    out["lr"] = float(f.lr)
    out["kl_anneal_steps"] = int(kl_steps)
    out["batch_size"] = bs
    return out


def orientation_scores(target, pool_dir: str, bs: int, n: int = 32) -> dict:
    """The attack target's mean score of the first ``n`` patches of each pool kind as stored
    and under each of the 47 other cube symmetries: ``{kind: {"as_stored", "other_mean",
    "other_min", "other_max", "n"}}``."""
    import numpy as np

    from nodulejax.adversarial.attacks import score_patches
    from nodulejax.adversarial.pool.store import PoolReader
    from nodulejax.data.patches import NUM_SYMMETRIES, symmetry

    reader, out = PoolReader(pool_dir), {}
    for kind in reader.kinds():
        x = np.asarray(reader.arrays(kind)[0][:n], np.float32)
        means = [float(np.mean(score_patches(target, np.stack([symmetry(p, k) for p in x]), bs)))
                 for k in range(NUM_SYMMETRIES)]
        out[kind] = {"as_stored": round(means[0], 4),
                     "other_mean": round(float(np.mean(means[1:])), 4),
                     "other_min": round(min(means[1:]), 4),
                     "other_max": round(max(means[1:]), 4), "n": int(len(x))}
    return out


def _main(fv) -> int:
    import jax.numpy as jnp
    import numpy as np

    from nodulejax.adversarial.attacks import score_patches
    from nodulejax.adversarial.noise import uniform_noise_patches
    from nodulejax.adversarial.pool.store import PoolReader
    from nodulejax.evaluation.probes import image_attack
    from nodulejax.experiments import EXPERIMENTS, canonical_model_name, row_of_model
    from nodulejax.models.classifier import load_fpr
    from nodulejax.runtime.keys import STREAMS, item_keys
    from nodulejax.study.context import Study

    c = fv["config"].value
    study = Study(c, fv["workdir"].value)
    study.require(NEEDED_STAGES, "the noise probe")
    pool_dir = os.path.join(study.workdir, study.record("pool")["pool_dir"])
    pool_x, pool_meta = PoolReader(pool_dir).arrays("noise")
    target = load_fpr(c, study.workdir, str(c.stress.attack_target))
    s, bs = c.stress, int(c.pgd.batch_size)
    n_fresh = int(s.get("num_noise", 0)) or len(pool_x)
    keys = item_keys(int(s.seed), STREAMS["stress/noise"], np.arange(n_fresh))
    fresh = image_attack(target, None, keys, 0.0, c, noise=True)
    uniform = np.asarray(uniform_noise_patches(jnp.asarray(keys), n_fresh,
                                              int(c.fpr.patch_size)))[..., 0]
    out = {"workdir": study.workdir, "attack_target": target.name,
           "noise_eps": float(c.pgd.noise_eps), "noise_step": float(c.pgd.noise_step),
           "noise_steps": int(c.pgd.noise_steps), "pool_noise": int(len(pool_x)),
           "pool_prob_after_mean": round(float(np.mean(pool_meta["prob_after"])), 4)
           if "prob_after" in pool_meta else None,
           "pool_noise_radial_mean": radial_profile(pool_x),
           "fresh_noise": int(n_fresh), "models": {}}
    out["orientation"] = orientation_scores(target, pool_dir, bs)
    r = int(fv["resamples"].value)
    for name in [m for m in fv["models"].value.split(",") if m]:
        name = canonical_model_name(name)
        m = load_fpr(c, study.workdir, name)
        row = EXPERIMENTS.get(row_of_model(name) or "")
        cell = {k: mean_ci(score_patches(m, x, bs), r)
                for k, x in (("pool_noise", pool_x), ("fresh_noise", fresh),
                             ("uniform_noise", uniform))}
        trained = bool(row and row.get("perturb") and not row.get("poisson"))
        cell["trained_on_pool_noise"] = trained
        if trained:
            cell["draws_per_pool_patch"] = round(draws_per_pool_patch(c, row, len(pool_x)), 2)
        out["models"][name] = cell
    if int(fv["train_steps"].value) > 0:
        out["fine_tune_trace"] = fine_tune_trace(c, study.workdir, study.scans("train"), target,
                                                 pool_x, int(fv["train_steps"].value),
                                                 int(fv["trace_kl_steps"].value))
    print_json_line(out, fv["json"].value)
    return 0


def main(argv=None) -> int:
    return run_main("analysis/noise_generalisation.py", _define, _main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
