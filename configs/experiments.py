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

EXPERIMENTS = {
    "baseline-ce": dict(stage="fpr", head="ce", init_from="fpr_seg", syn="none",
                        perturb=False, poisson=False),
    "baseline-beta": dict(stage="fpr", head="beta", init_from="fpr_seg", syn="none",
                          perturb=False, poisson=False),
    "baseline-beta-finetune": dict(stage="fpr_finetune", head="beta", init_from="baseline-ce",
                                   syn="none", perturb=False, poisson=False),
    "beta+syn (random)": dict(stage="fpr_augmented", head="beta",
                              init_from="baseline-beta-finetune", syn="random",
                              perturb=False, poisson=False),
    "beta+syn": dict(stage="fpr_augmented", head="beta", init_from="baseline-beta-finetune",
                     syn="pgd", perturb=False, poisson=False),
    "beta+poisson": dict(stage="fpr_augmented", head="beta", init_from="baseline-beta-finetune",
                         syn="none", perturb=False, poisson=True),
    "beta+poisson+syn": dict(stage="fpr_augmented", head="beta",
                             init_from="baseline-beta-finetune", syn="pgd", perturb=False,
                             poisson=True),
    "beta+perturb": dict(stage="fpr_augmented", head="beta", init_from="baseline-beta-finetune",
                         syn="none", perturb=True, poisson=False),
    "beta+perturb+syn": dict(stage="fpr_augmented", head="beta",
                             init_from="baseline-beta-finetune", syn="pgd", perturb=True,
                             poisson=False),
}
ALIASES = {"beta+syn(random)": "beta+syn (random)", "beta+syn-random": "beta+syn (random)",
           "beta_syn_random": "beta+syn (random)"}
SCALES = ("default", "demo", "tiny", "paper")


def canonical_name(name: str) -> str:
    """Accept the paper's row names and underscore/space-free aliases (beta_syn -> beta+syn)."""
    name = name.strip()
    name = ALIASES.get(name, name)
    if name not in EXPERIMENTS:
        name = ALIASES.get(name.replace("_", "+"), name.replace("_", "+"))
        name = name.replace("baseline+", "baseline-").replace("beta+finetune", "beta-finetune")
    if name not in EXPERIMENTS:
        raise ValueError(f"config argument: unknown Table 3 row {name!r}; "
                         f"known: {', '.join(EXPERIMENTS)}")
    return name


def apply_experiment(config, name: str):
    """Set config.train / config.fpr for the Table 3 row `name`; returns config."""
    name = canonical_name(name)
    row = EXPERIMENTS[name]
    config.train.experiment = name
    config.stage = row["stage"]
    config.fpr.head = row["head"]
    config.fpr.init_from = row["init_from"]
    config.train.syn = row["syn"]
    config.train.perturb = row["perturb"]
    config.train.poisson = row["poisson"]
    return config


def get_config(arg: str = "beta+syn"):
    row, _, scale = arg.partition(",")
    scale = scale.strip() or "demo"
    if scale not in SCALES:
        raise ValueError(f"config argument: unknown scale {scale!r}; known: {SCALES}")
    base = importlib.import_module(f"configs.{scale}").get_config()
    return apply_experiment(base, row)
