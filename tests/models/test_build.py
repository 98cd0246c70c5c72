"""nodulejax.models.build: every network from its config block, one module per setting, and
the jitted FPR probability."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import tiny
from nodulejax.models import build


def test_models_from_the_tiny_config():
    c = tiny.get_config()
    ce, beta = build.fpr_model(c, "ce"), build.fpr_model(c)
    assert (ce.head, beta.head) == ("ce", str(c.fpr.head))
    assert build.vae_model(c) is build.vae_model(c)  # cached: jitted attacks compile once
    assert build.critic_model(c) is build.critic_model(c)
    assert build.cg_model(c).__class__.__name__ == "ResUNet3D"
    assert build.rpn_model(c).__class__.__name__ == "ResUNetRPN"
    p = int(c.fpr.patch_size)
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, p, p, p, 1))
    v = beta.init(jax.random.PRNGKey(1), x[:1], task="cls")
    fn = build.fpr_prob_fn(beta, "beta")
    assert fn is build.fpr_prob_fn(beta, "beta")
    prob = np.asarray(fn(v, x))
    assert prob.shape == (3,) and np.all((prob > 0) & (prob < 1))
    one = np.asarray(fn(v, x[1:2]))  # per-example
    np.testing.assert_allclose(one, prob[1:2], rtol=1e-5, atol=1e-6)
    assert jnp.isfinite(prob).all()
