"""nodulejax.models.classifier: trained FPR / generator checkpoints as frozen handles."""

import jax
import numpy as np
import pytest

from configs import tiny
from nodulejax.errors import CheckpointError
from nodulejax.models import build, classifier
from nodulejax.runtime.checkpoint import ModelCheckpoints, model_dir


def test_load_fpr_takes_the_head_of_its_row_and_missing_models_are_named(tmp_path):
    c = tiny.get_config()
    model = build.fpr_model(c, "ce")
    p = int(c.fpr.patch_size)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, p, p, p, 1)), task="cls")["params"]
    wd = str(tmp_path)
    with ModelCheckpoints(model_dir(wd, "fpr_baseline-ce"), config=c.to_dict(),
                          async_save=False) as m:
        m.save(1, {"params": params})
    h = classifier.load_fpr(c, wd, "baseline-ce")  # the row name or the checkpoint name
    assert (h.name, h.head) == ("fpr_baseline-ce", "ce")
    leaves = jax.tree.leaves(h.variables["params"])
    for a, b in zip(leaves, jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(CheckpointError, match="fpr_beta\\+syn"):
        classifier.load_fpr(c, wd, "beta+syn")
    with pytest.raises(CheckpointError, match="synth"):
        classifier.load_generator(c, wd)
