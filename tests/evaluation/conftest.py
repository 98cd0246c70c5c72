"""The tiny config's real DenseUNet FPR with random initial weights (Beta head), shared by
the probe and curve tests; module-scoped, so each module builds it once on its worker."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.models.build import fpr_model
from nodulejax.models.classifier import FPRHandle
from nodulejax.runtime.config_tools import load_config

TINY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.py")


@pytest.fixture(scope="module")
def tiny_fpr():
    config = load_config(TINY)
    p = int(config.fpr.patch_size)
    model = fpr_model(config, "beta")
    # jitted init with an rbg key: XLA:CPU compiles it far faster than eager threefry init
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, p, p, p, 1)), task="cls"))(
        jax.random.key(0, impl="rbg"))
    fpr = FPRHandle(model, {"params": variables["params"]}, "beta", "fpr_test")
    x = np.random.default_rng(0).uniform(0.0, 1.0, (6, p, p, p)).astype(np.float32)
    return config, fpr, x  # x: 6 uniform random patches (6, P, P, P) in [0, 1]


