"""nodulejax.models.heads: the CE / Beta-evidential output heads as probabilities."""

import jax.numpy as jnp
import numpy as np

from nodulejax.models import heads


def test_beta_prob_uncertainty_ranges():
    rng = np.random.default_rng(0)
    ev = np.concatenate([rng.exponential(5.0, (64, 2)), [[0, 0], [1e4, 0], [0, 1e4]]])
    ev = jnp.asarray(ev, jnp.float32)
    p = np.asarray(heads.fpr_prob(ev, head="beta"))
    u = np.asarray(heads.beta_uncertainty(ev))
    assert np.all((p > 0) & (p < 1))
    assert np.all((u > 0) & (u <= 1))
    assert u[-3] == 1.0 and p[-3] == 0.5  # no evidence: maximal uncertainty, p = 1/2
    np.testing.assert_allclose(p, (ev[:, 0] + 1) / (ev.sum(1) + 2), rtol=1e-6)
