"""VAE (Eqs. 1-3) and spectrally normalised WGAN-GP critic (Eqs. 4-5): shapes, ranges,
method access, jit/grad, one Adam step lowers each loss, spectral norm ~ 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from nodulejax.errors import ConfigError
from nodulejax.losses.synth import l1_recon, vae_kl
from nodulejax.models import critic as critic_mod
from nodulejax.models import vae as vae_mod
from nodulejax.models.vae import VAE
from tests.models.helpers import L, P, adam_lowers


def test_vae_shapes_ranges_methods(vae, x):
    m, v = vae
    assert set(v) == {"params"}
    recon, mu, logvar = jax.jit(m.apply)(v, x, jax.random.PRNGKey(5))
    assert recon.shape == x.shape and mu.shape == (3, L) and logvar.shape == (3, L)
    assert bool(jnp.all((recon >= 0) & (recon <= 1)))
    mu2, _ = m.apply(v, x, method=VAE.encode)
    np.testing.assert_allclose(mu2, mu, rtol=1e-5, atol=1e-6)
    z = jax.random.normal(jax.random.PRNGKey(6), (2, L))
    dec = jax.jit(lambda v, z: m.apply(v, z, method=VAE.decode))
    out = dec(v, z)
    assert out.shape == (2, P, P, P, 1) and bool(jnp.all((out >= 0) & (out <= 1)))
    np.testing.assert_array_equal(dec(v, z), out)  # pure: same z -> same patch
    # reparameterisation: z = mu + sigma * eps with eps drawn from the key
    zr = vae_mod.reparameterize(jax.random.PRNGKey(7), mu, logvar)
    eps = jax.random.normal(jax.random.PRNGKey(7), mu.shape)
    np.testing.assert_allclose(zr, mu + jnp.exp(0.5 * logvar) * eps, rtol=1e-6)


def test_vae_bad_patch_size():
    with pytest.raises(ConfigError):
        VAE(latent_dim=4, width=2, patch_size=12).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 12, 1)), jax.random.PRNGKey(0)
        )


def test_vae_adam_step_lowers_eq6_loss(vae, x):
    m, v = vae
    key = jax.random.PRNGKey(9)  # fixed noise: a deterministic loss

    def loss_fn(params):
        recon, mu, logvar = m.apply({"params": params}, x, key)
        return jnp.mean(l1_recon(recon, x)) + 1e-5 * jnp.mean(vae_kl(mu, logvar))

    adam_lowers(loss_fn, v["params"])


def test_from_config():
    c = default.get_config()
    assert vae_mod.from_config(c.synth).latent_dim == c.synth.latent_dim
    assert critic_mod.from_config(c.synth).width >= 1


def test_aggregate_gaussian_has_the_mixtures_moments():
    """Mean and covariance of (1/N) sum_i N(mu_i, diag sigma_i^2): E[z z^T] - m m^T summed
    term by term, and a Monte Carlo draw from the mixture agreeing with both."""
    rng = np.random.default_rng(0)
    n, dim = 7, 3
    mu = rng.normal(size=(n, dim)) * [2.0, 0.5, 1.0] + [1.0, -3.0, 0.0]
    logvar = rng.normal(size=(n, dim)) * 0.5 - 1.0
    mean, cov = vae_mod.aggregate_gaussian(mu, logvar)
    second = sum(np.diag(np.exp(lv)) + np.outer(m, m) for m, lv in zip(mu, logvar, strict=True)) / n
    np.testing.assert_allclose(mean, mu.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, second - np.outer(mean, mean), rtol=1e-10, atol=1e-12)
    comp = rng.integers(n, size=400_000)
    draws = mu[comp] + np.exp(0.5 * logvar[comp]) * rng.normal(size=(len(comp), dim))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.03)
    with pytest.raises(ValueError, match="aggregate_gaussian"):
        vae_mod.aggregate_gaussian(mu[:0], logvar[:0])


def test_aggregate_prior_generator_decodes_the_mapped_code(vae):
    """decode(u) of the wrapper is the VAE's decode(m + A u); m = 0, A = I is the VAE itself."""
    m, v = vae
    g = vae_mod.AggregatePriorGenerator(m)
    u = jax.random.normal(jax.random.PRNGKey(4), (2, L))
    a = np.tril(np.random.default_rng(1).normal(size=(L, L))) + 2 * np.eye(L)
    mean = np.linspace(-1, 1, L)
    got = g.apply({"params": v["params"], "latent": {"mean": mean, "chol": a}}, u)
    want = m.apply(v, jnp.asarray(mean, jnp.float32) + u @ jnp.asarray(a, jnp.float32).T,
                   method="decode")
    np.testing.assert_allclose(got, want, atol=1e-6)
    ident = g.apply({"params": v["params"], "latent": {"mean": np.zeros(L), "chol": np.eye(L)}},
                    u, method="decode")
    np.testing.assert_allclose(ident, m.apply(v, u, method="decode"), atol=1e-6)
    assert g.latent_dim == L and hash(g) == hash(vae_mod.AggregatePriorGenerator(m))
    with pytest.raises(ValueError, match="only method='decode'"):
        g.apply({"params": v["params"], "latent": {}}, u, method="encode")
