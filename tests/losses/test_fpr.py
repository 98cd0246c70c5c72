"""Losses against hand-derived values (closed forms worked out in the comments, or an
independent numpy/scipy computation), plus the properties the paper relies on."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from nodulejax import losses
from nodulejax.errors import ConfigError
from nodulejax.models import heads


def test_bce_hand_values_and_stability():
    logits = jnp.array([0.0, 2.0, -3.0, 100.0, -100.0, 100.0])
    labels = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    # -log sigmoid(0) = log 2; -log(1 - sigmoid(2)) = log(1 + e^2); -log sigmoid(-3) =
    # log(1 + e^3); confident right answers ~ 0; confident wrong answer (100, y=0) = 100.
    expect = [math.log(2), math.log1p(math.e**2), math.log1p(math.e**3), 0.0, 0.0, 100.0]
    out = losses.bce_loss(logits, labels)
    assert out.shape == (6,)
    np.testing.assert_allclose(out, expect, rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda z: losses.bce_loss(z, labels).sum())(logits)
    assert np.all(np.isfinite(g))
    sig = 0.5 * (1 + np.tanh(np.asarray(logits, np.float64) / 2))  # sigmoid, no overflow
    np.testing.assert_allclose(g, sig - np.asarray(labels), atol=1e-6)


def _kl_quad(a, b):
    """KL(Beta(a, b) || U(0, 1)) = int pdf log pdf, by numerical quadrature (scipy)."""
    d = stats.beta(a, b)
    return integrate.quad(lambda x: d.pdf(x) * np.log(max(d.pdf(x), 1e-300)), 0, 1)[0]


def test_beta_kl_term_hand_values():
    # Beta(1, 2): pdf 2(1-x); KL = ln 2 + E[ln(1-x)] = ln 2 - 1/2.
    # Beta(4, 1): pdf 4x^3;  KL = ln 4 + 3 E[ln x] = ln 4 - 3/4.
    a = jnp.array([1.0, 4.0, 1.0, 2.5, 7.0])
    b = jnp.array([2.0, 1.0, 1.0, 3.5, 0.7])
    out = np.asarray(losses.beta_kl_uniform(a, b))
    np.testing.assert_allclose(out[:3], [math.log(2) - 0.5, math.log(4) - 0.75, 0.0], atol=1e-5)
    np.testing.assert_allclose(out[3:], [_kl_quad(2.5, 3.5), _kl_quad(7.0, 0.7)], rtol=1e-4)


def test_beta_loss_hand_values():
    ev = jnp.array([[3.0, 1.0], [3.0, 1.0], [0.0, 0.0]])
    y = jnp.array([1.0, 0.0, 1.0])
    # row 0: alpha 4, beta 2, S 6, p 2/3, y 1: 2(1/3)^2 + 2(2/3)(1/3)/7 = 2/9 + 4/63 = 2/7;
    #        misleading evidence only -> Beta(1, 2): KL = ln 2 - 1/2.
    # row 1: same evidence, y 0: 2(2/3)^2 + 4/63 = 20/21; Beta(4, 1): KL = ln 4 - 3/4.
    # row 2: no evidence: p 1/2, S 2: 2/4 + 2(1/4)/3 = 2/3; KL(Beta(1,1)) = 0.
    kl = np.array([math.log(2) - 0.5, math.log(4) - 0.75, 0.0])
    mse = np.array([2 / 7, 20 / 21, 2 / 3])
    for w in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(losses.beta_loss(ev, y, w), mse + w * kl, rtol=1e-5)
    np.testing.assert_allclose(
        losses.fpr_loss(ev, y, head="beta", kl_weight=0.5), mse + 0.5 * kl, rtol=1e-5
    )


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


def test_beta_loss_falls_as_true_evidence_rises():
    e = jnp.array([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0])
    for label in (0.0, 1.0):
        other = jnp.full_like(e, 0.7)
        ev = jnp.stack([e, other], 1) if label == 1 else jnp.stack([other, e], 1)
        for w in (0.0, 1.0):
            loss = np.asarray(losses.beta_loss(ev, jnp.full_like(e, label), w))
            assert np.all(np.diff(loss) < 0), (label, w, loss)


def test_fpr_dispatch():
    logits = jnp.array([1.5, -0.5])
    y = jnp.array([1.0, 0.0])
    np.testing.assert_allclose(losses.fpr_loss(logits, y, head="ce"), losses.bce_loss(logits, y))
    np.testing.assert_allclose(
        heads.fpr_prob(logits, head="ce"), 1 / (1 + np.exp(-np.array([1.5, -0.5]))), rtol=1e-6
    )
    with pytest.raises(ConfigError):
        losses.fpr_loss(logits, y, head="softmax")


def test_kl_anneal():
    assert float(losses.kl_anneal(0, 100)) == 0.0
    assert float(losses.kl_anneal(50, 100)) == 0.5
    assert float(losses.kl_anneal(500, 100)) == 1.0
    assert float(losses.kl_anneal(3, 0)) == 1.0


def test_vae_kl_and_l1_hand_values():
    mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    logvar = jnp.array([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 0: 0.5 [(1 + 1 - 1 - 0) + (2 + 0 - 1 - ln 2)] = 1 - ln(2)/2; row 1: N(0, 1) -> 0.
    np.testing.assert_allclose(losses.vae_kl(mu, logvar), [1 - math.log(2) / 2, 0.0], atol=1e-6)
    x = jnp.zeros((2, 2, 2, 2, 1))
    x_hat = x.at[0].set(1.0).at[1, 0].set(-0.5)  # example 1: 4 of 8 voxels off by 0.5
    np.testing.assert_allclose(losses.l1_recon(x_hat, x), [1.0, 0.25], rtol=1e-6)


def test_gradient_penalty_linear_critic():
    # D(x) = <w, x>: grad_x D = w at every interpolate, so GP = (||w|| - 1)^2.
    w = jnp.full((2, 2, 2, 2, 1), 0.5)  # 16 entries of 0.5 -> ||w|| = 2 -> GP = 1
    critic = lambda x: jnp.sum(x * w[None], axis=(1, 2, 3, 4, 5))
    key = jax.random.PRNGKey(0)
    rng = np.random.default_rng(1)
    real = jnp.asarray(rng.normal(size=(3, 2, 2, 2, 2, 1)), jnp.float32)
    fake = jnp.asarray(rng.normal(size=(3, 2, 2, 2, 2, 1)), jnp.float32)
    wd = (np.asarray(fake) * 0.5).sum() / 3 - (np.asarray(real) * 0.5).sum() / 3
    assert float(losses.gradient_penalty(critic, real, fake, key)) == pytest.approx(1.0, rel=1e-5)
    got = losses.wgan_gp_critic_loss(critic, real, fake, key, gp_weight=10.0)
    assert float(got) == pytest.approx(wd + 10.0, rel=1e-5)
    # unit-norm w: no penalty
    w1 = w / 2.0
    crit1 = lambda x: jnp.sum(x * w1[None], axis=(1, 2, 3, 4, 5))
    assert float(losses.gradient_penalty(crit1, real, fake, key)) == pytest.approx(0.0, abs=1e-8)


def test_gradient_penalty_quadratic_critic_per_example():
    # D(x) = 0.5 ||x||^2: grad = x_hat; with real == fake, x_hat = real for any eps.
    critic = lambda x: 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3, 3, 3, 1)), jnp.float32)
    norms = np.linalg.norm(np.asarray(x).reshape(4, -1), axis=1)
    gp = losses.gradient_penalty(critic, x, x, jax.random.PRNGKey(3))
    assert float(gp) == pytest.approx(np.mean((norms - 1) ** 2), rel=1e-5)


def test_generator_loss_eq6():
    x = jnp.zeros((2, 2, 2, 2, 1))
    x_hat = jnp.full_like(x, 0.5)
    mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    logvar = jnp.zeros((2, 2))
    d_fake = jnp.array([2.0, 4.0])
    # L1 0.5 + 1e-5 * mean KL (0.5, 0) + 0.1 * (-3)
    expect = 0.5 + 1e-5 * 0.25 - 0.3
    got = losses.synth_generator_loss(x_hat, x, mu, logvar, d_fake, 1e-5, 0.1)
    assert float(got) == pytest.approx(expect, rel=1e-6)
