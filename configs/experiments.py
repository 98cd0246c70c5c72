"""The Table 3 rows as configs: `--config configs/experiments.py:beta+syn` or `:beta+syn,demo`.

The argument is `ROW[,SCALE]`, SCALE one of default / demo / tiny / paper / evidence (default: demo).
Each row sets the FPR head, its initialisation and the augmentation sources of Section 3.3;
the rows and their sampling ratios are tabled in ``nodulejax/experiments.py``.
"""

import importlib

from nodulejax.errors import ConfigError
from nodulejax.experiments import EXPERIMENTS, apply_experiment, canonical_name  # noqa: F401

SCALES = ("default", "demo", "tiny", "paper", "evidence")


def get_config(arg: str = "beta+syn"):
    row, _, scale = arg.partition(",")
    scale = scale.strip() or "demo"
    if scale not in SCALES:
        raise ConfigError(f"config argument: unknown scale {scale!r}; known: {SCALES}")
    base = importlib.import_module(f"configs.{scale}").get_config()
    return apply_experiment(base, row)
