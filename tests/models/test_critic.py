"""nodulejax.models.critic: the spectrally-normalised WGAN-GP critic of Section 3.2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.losses.synth import wgan_gp_critic_loss
from nodulejax.models.critic import spectral_norm_estimate
from tests.models.helpers import adam_lowers


def test_critic_shapes_and_per_example(critic, x):
    m, v = critic
    assert set(v) == {"params"}  # stateless spectral norm: nothing mutable
    f = jax.jit(m.apply)
    s = f(v, x)
    assert s.shape == (3,)
    np.testing.assert_allclose(f(v, x[2:3]), s[2:3], rtol=1e-5, atol=1e-6)

def test_spectral_norm_estimate_matches_svd():
    rng = np.random.default_rng(0)
    for shape in [(27 * 4, 8), (64, 1), (16, 16), (8, 40), (216, 16)]:
        w = rng.normal(size=shape).astype(np.float32)
        sig = float(spectral_norm_estimate(jnp.asarray(w)))
        top = np.linalg.svd(w, compute_uv=False)[0]
        assert sig == pytest.approx(top, rel=1e-3)
    # normalised kernels have spectral norm 1; gradient is finite
    w = rng.normal(size=(27 * 8, 16)).astype(np.float32)
    sig = float(spectral_norm_estimate(jnp.asarray(w)))
    assert np.linalg.svd(w / sig, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
    g = jax.grad(lambda w: spectral_norm_estimate(w))(jnp.asarray(w))
    u, _, vt = np.linalg.svd(w)
    np.testing.assert_allclose(
        g,
        np.outer(u[:, 0], vt[0]),  # d sigma_1 / dW = u_1 v_1^T
        atol=1e-3,
    )

def test_critic_adam_step_lowers_wgan_gp_loss(critic, vae, x):
    m, v = critic
    fake = jax.random.uniform(jax.random.PRNGKey(11), x.shape) * 0.5
    key = jax.random.PRNGKey(12)

    def loss_fn(params):
        fn = lambda xx: m.apply({"params": params}, xx)
        return wgan_gp_critic_loss(fn, x, fake, key, gp_weight=10.0)

    adam_lowers(loss_fn, v["params"])
