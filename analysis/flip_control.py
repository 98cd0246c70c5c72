"""Controlled experiment: does flipping the pool patches decide what the perturb rows learn?

On a finished study (its ``fpr``, ``pool`` and ``augmented`` stages done), re-trains the
``beta+perturb`` fine-tune twice per seed from the same baseline-beta-finetune weights, on the
same pool, with the same sampler: once as the study trains it (pool patches reach the loss as
stored, ``train.augment``) and once with the pool patches given a random cube symmetry per
draw, as the fine-tune did before the fix (``GroupSource.geometric`` forced on). Only that
switch differs. Each model is then scored on

* ``pool_noise``: the pool's adversarial-noise patches as stored (the fine-tune's negatives),
* ``fresh_noise``: PGD noise made the way Table 6 makes it (against the attack target, keys of
  the ``stress/noise`` stream, ``c.stress.num_noise`` patches),
* ``real_positives`` / ``real_negatives``: the held-out test candidates (AUC as well).

Mean scores, n per cell, one line of JSON. The seed replicas are ``c.seed + 1000 k``
(``experiments.replica_seed``), k = 0 .. ``--seeds`` - 1.

    python analysis/flip_control.py --config configs/demo.py --workdir runs/demo [--seeds 2]
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from nodulejax.runtime.cli import print_json_line, run_main  # noqa: E402

NEEDED_STAGES = ("fpr", "pool")


def _define(fv):
    flags.DEFINE_string("workdir", None, "finished study run folder (fpr and pool stages done)",
                        flag_values=fv)
    flags.DEFINE_integer("seeds", 2, "fine-tune seeds per variant", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result here", flag_values=fv)
    return ["workdir"]


def _main(fv) -> int:
    import shutil
    import tempfile

    import numpy as np

    from nodulejax.adversarial.attacks import score_patches
    from nodulejax.adversarial.pool.store import PoolReader
    from nodulejax.evaluation.probes import image_attack
    from nodulejax.experiments import ATTACK_MODEL, replica_name, row_config
    from nodulejax.models.classifier import load_fpr
    from nodulejax.runtime import checkpoint
    from nodulejax.runtime.keys import STREAMS, item_keys
    from nodulejax.study.context import Study
    from nodulejax.train import augment as aug
    from nodulejax.train.fpr import evaluate_fpr, train_fpr_experiment

    c = fv["config"].value
    study = Study(c, fv["workdir"].value)
    study.require(NEEDED_STAGES, "the flip control")
    pool_dir = os.path.join(study.workdir, study.record("pool")["pool_dir"])
    pool_noise, _ = PoolReader(pool_dir).arrays("noise")
    target = load_fpr(c, study.workdir, str(c.stress.attack_target))
    bs = int(c.pgd.batch_size)
    n = int(c.stress.get("num_noise", 0)) or len(pool_noise)
    fresh = image_attack(target, None, item_keys(int(c.stress.seed), STREAMS["stress/noise"],
                                                 np.arange(n)), 0.0, c, noise=True)
    train, val, test = (study.scans(s) for s in ("train", "val", "test"))
    cfg = row_config(c, "beta+perturb")
    original = aug._pool_source
    out = {"workdir": study.workdir, "pool_noise": int(len(pool_noise)),
           "fresh_noise": int(n), "attack_target": {
               "pool_noise": round(float(np.mean(score_patches(target, pool_noise, bs))), 4),
               "fresh_noise": round(float(np.mean(score_patches(target, fresh, bs))), 4)},
           "variants": {}}
    scratch = tempfile.mkdtemp(prefix="flip_control_")
    try:
        for variant, flip in (("as_stored", False), ("flipped", True)):
            def source(reader, name, pool_kind, label, _flip=flip):
                s = original(reader, name, pool_kind, label)
                s.geometric = _flip
                return s

            aug._pool_source = source
            rows = []
            for k in range(int(fv["seeds"].value)):
                name = replica_name("beta+perturb", k)
                wd = os.path.join(scratch, f"{variant}")
                if not os.path.exists(os.path.join(wd, "checkpoints", ATTACK_MODEL)):
                    os.makedirs(os.path.join(wd, "checkpoints"), exist_ok=True)
                    os.symlink(checkpoint.model_dir(study.workdir, ATTACK_MODEL),
                               checkpoint.model_dir(wd, ATTACK_MODEL))
                params = train_fpr_experiment(cfg, wd, name, train, val, pool_dir=pool_dir,
                                              progress=False)
                m = load_fpr(cfg, wd, name)
                held = evaluate_fpr(params, cfg, test)
                rows.append({"seed": k, "pool_noise": round(float(np.mean(
                    score_patches(m, pool_noise, bs))), 4),
                    "fresh_noise": round(float(np.mean(score_patches(m, fresh, bs))), 4),
                    "test_auc": round(float(held["auc"]), 4)})
            out["variants"][variant] = rows
    finally:
        aug._pool_source = original
        shutil.rmtree(scratch, ignore_errors=True)
    print_json_line(out, fv["json"].value)
    return 0


def main(argv=None) -> int:
    return run_main("analysis/flip_control.py", _define, _main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
