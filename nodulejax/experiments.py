"""The Table 3 rows, their checkpoint names and the model the paper attacks.

One home for what names a trained model: ``EXPERIMENTS`` (the paper's rows, in its order),
:func:`canonical_name` (the paper's spelling or an underscore alias -> the row),
:func:`model_name` (row -> checkpoint ``fpr_<row>``, spaces and parentheses -> ``-``:
``"beta+syn (random)"`` -> ``"fpr_beta+syn-random"``), :func:`canonical_model_name` (either
spelling -> checkpoint name), :func:`row_config` (a config with a row applied) and
``ATTACK_TARGET`` (Section 4: the augmentation pool and the stress attacks run against
baseline-beta-finetune). ``configs/experiments.py:ROW[,SCALE]`` turns a row into a config.

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

from __future__ import annotations

from nodulejax.errors import ConfigError, nearest

__all__ = ["EXPERIMENTS", "ALIASES", "ALL_ROWS", "BASELINES", "AUGMENTED", "ATTACK_TARGET",
           "ATTACK_MODEL", "SEG_MODEL", "SYNTH_MODEL", "CG_MODELS", "canonical_name",
           "apply_experiment", "row", "row_config", "model_name", "file_name", "canonical_model_name",
           "row_of_model", "fpr_head", "REPLICA_SEP", "split_replica", "replica_name",
           "replica_seed"]

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
def canonical_name(name: str) -> str:
    """Accept the paper's row names and underscore/space-free aliases (beta_syn -> beta+syn)."""
    name = name.strip()
    name = ALIASES.get(name, name)
    if name not in EXPERIMENTS:
        name = ALIASES.get(name.replace("_", "+"), name.replace("_", "+"))
        name = name.replace("baseline+", "baseline-").replace("beta+finetune", "beta-finetune")
    if name not in EXPERIMENTS:
        hint = nearest(name, EXPERIMENTS, "nearest: {}; ")
        raise ConfigError(f"unknown Table 3 row {name!r}; {hint}"
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



ALL_ROWS = tuple(EXPERIMENTS)
BASELINES = tuple(n for n, r in EXPERIMENTS.items() if r["stage"] != "fpr_augmented")
AUGMENTED = tuple(n for n, r in EXPERIMENTS.items() if r["stage"] == "fpr_augmented")
ATTACK_TARGET = "baseline-beta-finetune"  # the model the paper attacks (Section 4)

# checkpoint names of the models that are not Table 3 rows
SEG_MODEL = "fpr_seg"  # DenseUNet segmentation pretraining (Section 3.1)
SYNTH_MODEL = "synth"  # VAE + WGAN-GP critic (Section 3.2)
CG_MODELS = ("cg", "cg_ggo", "rpn")  # blob ResUNet, its GGO fine-tune, the RPN head


def row(name: str) -> tuple[str, dict]:
    """``(canonical row name, its EXPERIMENTS entry as a new dict)``."""
    name = canonical_name(name)
    return name, dict(EXPERIMENTS[name])


def row_config(config, name: str):
    """A copy of ``config`` with the Table 3 row ``name`` applied (:func:`apply_experiment`)."""
    return apply_experiment(config.copy_and_resolve_references(), name)


REPLICA_SEP = ".s"  # "beta+perturb.s1": the row's fine-tune trained with seed replica 1


def split_replica(name: str) -> tuple[str, int]:
    """``"beta+perturb.s2"`` -> ``("beta+perturb", 2)``; a name without the suffix -> (name, 0).

    A seed replica k >= 1 of an augmented row is the same fine-tune (same pool, same
    initialisation from baseline-beta-finetune) trained with the seed :func:`replica_seed`
    (other batches, flips and in-step keys): ``config.train.finetune_seeds`` replicas give the
    between-run spread of the Tables 4-6 claims (``study.claims``)."""
    base, sep, k = name.rpartition(REPLICA_SEP)
    if not sep or not k.isdigit():
        return name, 0
    if int(k) < 1:
        raise ConfigError(f"model name {name!r}: a seed replica is '<row>{REPLICA_SEP}<k>' "
                          f"with k >= 1")
    return base, int(k)


def replica_name(row_name: str, k: int) -> str:
    """Row ``row_name``'s seed replica ``k`` (0: the row itself): ``"beta+perturb.s1"``."""
    name = canonical_name(row_name)
    if k and EXPERIMENTS[name]["stage"] != "fpr_augmented":
        raise ConfigError(f"{name!r} has no seed replicas: only the augmented fine-tunes do")
    return name if k == 0 else f"{name}{REPLICA_SEP}{int(k)}"


def replica_seed(seed: int, k: int) -> int:
    """The training seed of replica ``k``: ``seed`` for k = 0, ``seed + 1000 k`` otherwise."""
    return int(seed) + 1000 * int(k)


def model_name(row_name: str) -> str:
    """Checkpoint name of a Table 3 row: ``fpr_<row>`` with spaces/parentheses -> ``-``
    (``"beta+syn (random)"`` -> ``"fpr_beta+syn-random"``); a seed replica keeps its suffix
    (``"beta+perturb.s1"`` -> ``"fpr_beta+perturb.s1"``)."""
    base, k = split_replica(row_name.strip())
    name = canonical_name(base).replace(" (", "-").replace("(", "-").replace(")", "")
    return "fpr_" + name.replace(" ", "-") + (f"{REPLICA_SEP}{k}" if k else "")


def file_name(row_name: str) -> str:
    """The one spelling of a Table 3 row in file and folder names (prediction CSVs, FROC
    folders, PNGs): its checkpoint name without ``fpr_`` (``"beta+syn (random)"`` ->
    ``"beta+syn-random"``). Tables and plots show the paper's spelling."""
    return model_name(row_name)[len("fpr_"):]


ATTACK_MODEL = model_name(ATTACK_TARGET)  # "fpr_baseline-beta-finetune"
_MODEL_ROWS = {model_name(r): r for r in EXPERIMENTS}


def canonical_model_name(name: str) -> str:
    """``"beta+syn"`` or ``"fpr_beta+syn"`` -> ``"fpr_beta+syn"``; other names starting with
    ``fpr`` (``fpr_seg``, a user's own checkpoint) pass through."""
    name = name.strip()
    if name.startswith("fpr"):
        return name
    return model_name(name)


def row_of_model(name: str) -> str | None:
    """The Table 3 row of checkpoint ``name`` (either spelling), or None."""
    try:
        return _MODEL_ROWS.get(split_replica(canonical_model_name(name))[0])
    except ConfigError:
        return None


def fpr_head(config, name: str) -> str:
    """Head of FPR checkpoint ``name`` from its Table 3 row; ``config.fpr.head`` otherwise."""
    r = row_of_model(name)
    return EXPERIMENTS[r]["head"] if r else str(config.fpr.head)
