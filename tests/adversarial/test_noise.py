"""nodulejax.adversarial.noise: uniform noise (Table 5 "a uniform noise", Table 6 "Uniform
noise") and the one Poisson sampler of Table 5 and the beta+poisson rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.adversarial import noise
from nodulejax.errors import ConfigError


def test_uniform_noise_magnitude_and_bounds():
    x = jnp.full((4, 8, 8, 8, 1), 0.5)
    for a in (0.0, 0.1, 0.3):
        xn = noise.uniform_noise(jax.random.PRNGKey(0), x, a)
        dev = jnp.abs(xn - x)
        assert float(dev.max()) <= a + 1e-6
        if a > 0:
            assert float(dev.max()) > 0.9 * a and abs(float((xn - x).mean())) < 0.05 * a
    xn = noise.uniform_noise(jax.random.PRNGKey(0), jnp.full((2, 8, 8, 8, 1), 0.95), 0.3)
    assert float(xn.max()) <= 1.0 and float(xn.min()) >= 0.65 - 1e-6
    with pytest.raises(ConfigError):
        noise.uniform_noise(jax.random.PRNGKey(0), x, -1.0)


def test_poisson_noise_rescaling():
    x = jnp.full((4, 16, 16, 16, 1), 0.4)
    weak = noise.poisson_noise(jax.random.PRNGKey(0), x, 50.0)
    strong = noise.poisson_noise(jax.random.PRNGKey(0), x, 5.0)
    # mean preserved, std sqrt(x / s), values on the 1/s lattice
    assert abs(float(weak.mean()) - 0.4) < 0.01 and abs(float(strong.mean()) - 0.4) < 0.03
    np.testing.assert_allclose(float(weak.std()), np.sqrt(0.4 / 50), rtol=0.1)
    np.testing.assert_allclose(float(strong.std()), np.sqrt(0.4 / 5), rtol=0.1)
    np.testing.assert_allclose(np.asarray(weak) * 50, np.round(np.asarray(weak) * 50), atol=1e-4)
    assert float(strong.max()) <= 1.0
    with pytest.raises(ConfigError):
        noise.poisson_noise(jax.random.PRNGKey(0), x, 0.0)


def test_table5_and_training_draw_the_same_poisson_noise():
    """poisson_scaled with one scale is poisson_noise with that scale for the same draws."""
    x = jax.random.uniform(jax.random.PRNGKey(3), (3, 6, 6, 6, 1))
    a = noise.poisson_noise(jax.random.PRNGKey(0), x, 5.0)
    b = noise.poisson_scaled(jax.random.PRNGKey(0), x, (5.0,))
    assert a.shape == b.shape == x.shape
    # both are clip(Poisson(x s) / s) on the 1/s lattice with the same mean and spread
    for v in (a, b):
        np.testing.assert_allclose(np.asarray(v) * 5, np.round(np.asarray(v) * 5), atol=1e-4)
    assert abs(float(a.mean()) - float(b.mean())) < 0.1
