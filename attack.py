"""Adversarial attacks on trained FPR networks: augmentation pool, stress tests, figures.

    python attack.py --config configs/demo.py --workdir runs/demo --mode pool
    python attack.py --config configs/demo.py --workdir runs/demo --mode stress \
        --models baseline-beta-finetune,beta+syn
    python attack.py --config configs/demo.py --workdir runs/demo --mode figures

pool: Section 4's precomputed pool against ``--attack_model`` (default baseline-beta-finetune)
on the training folds (resumable: re-run the same command after a kill). stress: Tables 4-6
(markdown + JSON) on the test folds. figures: Figs. 5, 6, 8, 9 (PNG) on the test folds.
"""

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from nodulejax.adversarial.pool import build_pool
from nodulejax.data.prepare import prepare_split
from nodulejax.errors import NoduleJaxError
from nodulejax.evaluation import figures, stress
from nodulejax.experiments import canonical_model_name
from nodulejax.runtime import devices

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, data, pool, report).")
_MODE = flags.DEFINE_enum("mode", "pool", ["pool", "stress", "figures"], "What to run.")
_MODELS = flags.DEFINE_list("models", ["baseline-beta-finetune"],
                            "FPR models for stress (Table 3 rows or fpr_* checkpoint names).")
_ATTACK = flags.DEFINE_string("attack_model", "baseline-beta-finetune",
                              "FPR model attacked to build the pool / figures.")
_OUT = flags.DEFINE_string("out_dir", None, "Output folder (default: WORKDIR/pool or "
                           "WORKDIR/report/{stress,figures}).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out (-v 0)
    try:
        devices.configure_from(_CONFIG.value)  # before the first JAX computation
        logging.info("JAX devices: %s", jax.devices())
        _run(_CONFIG.value, _WORKDIR.value)
    except NoduleJaxError as e:  # bad file / field: the message names it, no traceback needed
        raise SystemExit(f"attack.py: {type(e).__name__}: {e}") from None


def _run(config, workdir: str):
    if _MODE.value == "pool":
        out = build_pool(config, workdir, prepare_split(config, workdir, "train"),
                              fpr_model_name=canonical_model_name(_ATTACK.value),
                              out_dir=_OUT.value, progress=True)
        print(f"pool: {out}")
    elif _MODE.value == "stress":
        out_dir = _OUT.value or os.path.join(workdir, "report", "stress")
        stress.run_stress(config, workdir, prepare_split(config, workdir, "test"), _MODELS.value,
                          out_dir, progress=True)
        with open(os.path.join(out_dir, "stress.md")) as f:
            print(f.read())
    else:
        for p in figures.make_figures(config, workdir, prepare_split(config, workdir, "test"),
                                      _OUT.value, fpr_model_name=_ATTACK.value):
            print(p)


if __name__ == "__main__":
    app.run(main)
