"""nodulejax.losses.synth: VAE + WGAN-GP losses of Eqs. 5-6 by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.losses.synth import (
    gradient_penalty,
    l1_recon,
    synth_generator_loss,
    vae_kl,
    wgan_gp_critic_loss,
)


def test_vae_kl_and_l1_hand_values():
    mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    logvar = jnp.array([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 0: 0.5 [(1 + 1 - 1 - 0) + (2 + 0 - 1 - ln 2)] = 1 - ln(2)/2; row 1: N(0, 1) -> 0.
    np.testing.assert_allclose(vae_kl(mu, logvar), [1 - math.log(2) / 2, 0.0], atol=1e-6)
    x = jnp.zeros((2, 2, 2, 2, 1))
    x_hat = x.at[0].set(1.0).at[1, 0].set(-0.5)  # example 1: 4 of 8 voxels off by 0.5
    np.testing.assert_allclose(l1_recon(x_hat, x), [1.0, 0.25], rtol=1e-6)

def test_gradient_penalty_linear_critic():
    # D(x) = <w, x>: grad_x D = w at every interpolate, so GP = (||w|| - 1)^2.
    w = jnp.full((2, 2, 2, 2, 1), 0.5)  # 16 entries of 0.5 -> ||w|| = 2 -> GP = 1
    critic = lambda x: jnp.sum(x * w[None], axis=(1, 2, 3, 4, 5))
    key = jax.random.PRNGKey(0)
    rng = np.random.default_rng(1)
    real = jnp.asarray(rng.normal(size=(3, 2, 2, 2, 2, 1)), jnp.float32)
    fake = jnp.asarray(rng.normal(size=(3, 2, 2, 2, 2, 1)), jnp.float32)
    wd = (np.asarray(fake) * 0.5).sum() / 3 - (np.asarray(real) * 0.5).sum() / 3
    assert float(gradient_penalty(critic, real, fake, key)) == pytest.approx(1.0, rel=1e-5)
    got = wgan_gp_critic_loss(critic, real, fake, key, gp_weight=10.0)
    assert float(got) == pytest.approx(wd + 10.0, rel=1e-5)
    # unit-norm w: no penalty
    w1 = w / 2.0
    crit1 = lambda x: jnp.sum(x * w1[None], axis=(1, 2, 3, 4, 5))
    assert float(gradient_penalty(crit1, real, fake, key)) == pytest.approx(0.0, abs=1e-8)

def test_gradient_penalty_quadratic_critic_per_example():
    # D(x) = 0.5 ||x||^2: grad = x_hat; with real == fake, x_hat = real for any eps.
    critic = lambda x: 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3, 3, 3, 1)), jnp.float32)
    norms = np.linalg.norm(np.asarray(x).reshape(4, -1), axis=1)
    gp = gradient_penalty(critic, x, x, jax.random.PRNGKey(3))
    assert float(gp) == pytest.approx(np.mean((norms - 1) ** 2), rel=1e-5)

def test_generator_loss_eq6():
    x = jnp.zeros((2, 2, 2, 2, 1))
    x_hat = jnp.full_like(x, 0.5)
    mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    logvar = jnp.zeros((2, 2))
    d_fake = jnp.array([2.0, 4.0])
    # L1 0.5 + 1e-5 * mean KL (0.5, 0) + 0.1 * (-3)
    expect = 0.5 + 1e-5 * 0.25 - 0.3
    got = synth_generator_loss(x_hat, x, mu, logvar, d_fake, 1e-5, 0.1)
    assert float(got) == pytest.approx(expect, rel=1e-6)
