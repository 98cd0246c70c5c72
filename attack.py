"""Adversarial attacks on trained FPR networks: augmentation pool, stress tests, figures.

    python attack.py --config configs/demo.py --workdir runs/demo --mode pool
    python attack.py --config configs/demo.py --workdir runs/demo --mode stress \
        --models baseline-beta-finetune,beta+syn
    python attack.py --config configs/demo.py --workdir runs/demo --mode figures

pool: Section 4's precomputed pool against --attack_model on the training folds, in
WORKDIR/pool (resumable: re-run the same command after a kill). stress: Tables 4-6 (markdown +
JSON) on the test folds, in WORKDIR/eval/stress. figures: Figs. 5, 6, 8, 9 (PNG) on the test
folds, in WORKDIR/eval/figures. These are the folders the study writes; --out_dir writes
elsewhere. Models are Table 3 rows (beta+syn) or checkpoint names (fpr_beta+syn).
"""

import os
import sys

from absl import flags

from nodulejax.adversarial.pool.build import build_pool
from nodulejax.data.prepare import prepare_split
from nodulejax.evaluation import figures, stress
from nodulejax.runtime.checkpoint import require_model
from nodulejax.runtime.cli import run_main

_OUT_DIRS = {"pool": "pool", "stress": os.path.join("eval", "stress"),
             "figures": os.path.join("eval", "figures")}


def define(fv):
    flags.DEFINE_string("workdir", None, "run folder (checkpoints, data, pool, eval)",
                        flag_values=fv)
    flags.DEFINE_enum("mode", "pool", ["pool", "stress", "figures"], "what to run",
                      flag_values=fv)
    flags.DEFINE_list("models", ["baseline-beta-finetune"],
                      "FPR models for stress (Table 3 rows or fpr_* checkpoint names)",
                      flag_values=fv)
    flags.DEFINE_string("attack_model", "baseline-beta-finetune",
                        "FPR model attacked to build the pool / figures", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "output folder (default: WORKDIR/pool, "
                        "WORKDIR/eval/stress or WORKDIR/eval/figures, as the study)",
                        flag_values=fv)
    return ["workdir"]


def main(fv):
    config, workdir, mode = fv["config"].value, fv["workdir"].value, fv["mode"].value
    out_dir = fv["out_dir"].value or os.path.join(workdir, _OUT_DIRS[mode])
    attack = None if mode == "stress" else require_model(workdir, fv["attack_model"].value)
    if mode == "pool":
        out = build_pool(config, workdir, prepare_split(config, workdir, "train"),
                         fpr_model_name=attack, out_dir=out_dir, progress=True)
        print(f"pool: {out}")
    elif mode == "stress":
        models = [require_model(workdir, m) for m in fv["models"].value]
        stress.run_stress(config, workdir, prepare_split(config, workdir, "test"), models,
                          out_dir, progress=bool(config.train.progress))
        with open(os.path.join(out_dir, "stress.md"), encoding="utf-8") as f:
            print(f.read())
    else:
        for p in figures.make_figures(config, workdir, prepare_split(config, workdir, "test"),
                                      out_dir, fpr_model_name=attack):
            print(p)


if __name__ == "__main__":
    sys.exit(run_main("attack.py", define, main, doc=__doc__))
