"""nodulejax.experiments: the Table 3 rows, their checkpoint names and the attacked model."""

import ml_collections
import pytest

from nodulejax import experiments as ex
from nodulejax.errors import ConfigError
from nodulejax.runtime.checkpoint import model_dir


def test_rows_in_the_papers_order_and_their_checkpoint_names(tmp_path):
    assert ex.ALL_ROWS[:3] == ("baseline-ce", "baseline-beta", "baseline-beta-finetune")
    assert set(ex.BASELINES) | set(ex.AUGMENTED) == set(ex.ALL_ROWS) and len(ex.AUGMENTED) == 6
    assert ex.model_name("beta+syn (random)") == "fpr_beta+syn-random"
    assert ex.ATTACK_MODEL == "fpr_baseline-beta-finetune"
    for row in ex.ALL_ROWS:  # every name is a valid, distinct checkpoint folder
        model_dir(str(tmp_path), ex.model_name(row))
        assert ex.row_of_model(ex.model_name(row)) == row
    assert len({ex.model_name(r) for r in ex.ALL_ROWS}) == len(ex.ALL_ROWS)


def test_aliases_spellings_and_unknown_rows():
    assert ex.canonical_name("beta_syn_random") == "beta+syn (random)"
    assert ex.canonical_name(" beta+syn ") == "beta+syn"
    assert ex.canonical_model_name("beta+syn") == ex.canonical_model_name("fpr_beta+syn")
    assert ex.canonical_model_name("fpr_seg") == "fpr_seg"
    with pytest.raises(ConfigError, match="unknown Table 3 row 'beta\\+synn'"):
        ex.canonical_name("beta+synn")
    assert ex.row_of_model("fpr_my_own") is None


def test_row_config_and_heads():
    c = ml_collections.ConfigDict({
        "stage": "study",
        "fpr": {"head": "ce", "init_from": ""},
        "train": {"experiment": "", "syn": "none", "perturb": False, "poisson": False}})
    r = ex.row_config(c, "beta+perturb+syn")
    assert (r.stage, r.fpr.head, r.fpr.init_from, r.train.syn, r.train.perturb) == (
        "fpr_augmented", "beta", "baseline-beta-finetune", "pgd", True)
    assert c.fpr.head == "ce"  # a copy
    assert ex.fpr_head(c, "fpr_baseline-ce") == "ce" and ex.fpr_head(c, "fpr_beta+syn") == "beta"
    assert ex.fpr_head(c, "fpr_other") == "ce"
