"""The Table 3 rows as configs: `--config configs/experiments.py:beta+syn` or `:beta+syn,demo`.

The argument is `ROW[,SCALE]`, SCALE one of default / demo / tiny / paper (default: demo).
Each row sets the FPR head, its initialisation and the augmentation sources of Section 3.3:

| row                    | stage         | head | init from              | syn    | perturb | poisson |
|------------------------|---------------|------|------------------------|--------|---------|---------|
| baseline-ce            | fpr           | ce   | fpr_seg                | -      | -       | -       |
| baseline-beta          | fpr           | beta | fpr_seg                | -      | -       | -       |
| baseline-beta-finetune | fpr_finetune  | beta | baseline-ce            | -      | -       | -       |
| beta+syn (random)      | fpr_augmented | beta | baseline-beta-finetune | random | -       | -       |
| beta+syn               | fpr_augmented | beta | baseline-beta-finetune | pgd    | -       | -       |
| beta+poisson           | fpr_augmented | beta | baseline-beta-finetune | -      | -       | yes     |
| beta+poisson+syn       | fpr_augmented | beta | baseline-beta-finetune | pgd    | -       | yes     |
| beta+perturb           | fpr_augmented | beta | baseline-beta-finetune | -      | yes     | -       |
| beta+perturb+syn       | fpr_augmented | beta | baseline-beta-finetune | pgd    | yes     | -       |

Sampling ratios (paper Section 3.3): positives 50% real / 25% synthetic / 25% adversarial,
negatives 50% real / 50% adversarial. A source a row does not use gives its share to the real
patches (e.g. beta+syn: positives 75% real / 25% synthetic, negatives 100% real). Poisson rows
draw Poisson-noised real patches with the adversarial ratios, as the paper does (Section 4).
"""

import importlib

from nodulejax.errors import ConfigError
from nodulejax.experiments import EXPERIMENTS, apply_experiment, canonical_name  # noqa: F401

SCALES = ("default", "demo", "tiny", "paper")


def get_config(arg: str = "beta+syn"):
    row, _, scale = arg.partition(",")
    scale = scale.strip() or "demo"
    if scale not in SCALES:
        raise ConfigError(f"config argument: unknown scale {scale!r}; known: {SCALES}")
    base = importlib.import_module(f"configs.{scale}").get_config()
    return apply_experiment(base, row)
