"""Losses against hand-derived values (closed forms worked out in the comments, or an
independent numpy/scipy computation), plus the properties the paper relies on."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from nodulejax.errors import ConfigError
from nodulejax.losses.fpr import bce_loss, beta_kl_uniform, beta_loss, fpr_loss, kl_anneal
from nodulejax.models import heads


def test_bce_hand_values_and_stability():
    logits = jnp.array([0.0, 2.0, -3.0, 100.0, -100.0, 100.0])
    labels = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    # -log sigmoid(0) = log 2; -log(1 - sigmoid(2)) = log(1 + e^2); -log sigmoid(-3) =
    # log(1 + e^3); confident right answers ~ 0; confident wrong answer (100, y=0) = 100.
    expect = [math.log(2), math.log1p(math.e**2), math.log1p(math.e**3), 0.0, 0.0, 100.0]
    out = bce_loss(logits, labels)
    assert out.shape == (6,)
    np.testing.assert_allclose(out, expect, rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda z: bce_loss(z, labels).sum())(logits)
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
    out = np.asarray(beta_kl_uniform(a, b))
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
        np.testing.assert_allclose(beta_loss(ev, y, w), mse + w * kl, rtol=1e-5)
    np.testing.assert_allclose(
        fpr_loss(ev, y, head="beta", kl_weight=0.5), mse + 0.5 * kl, rtol=1e-5
    )


def test_beta_loss_falls_as_true_evidence_rises():
    e = jnp.array([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0])
    for label in (0.0, 1.0):
        other = jnp.full_like(e, 0.7)
        ev = jnp.stack([e, other], 1) if label == 1 else jnp.stack([other, e], 1)
        for w in (0.0, 1.0):
            loss = np.asarray(beta_loss(ev, jnp.full_like(e, label), w))
            assert np.all(np.diff(loss) < 0), (label, w, loss)


def test_fpr_dispatch():
    logits = jnp.array([1.5, -0.5])
    y = jnp.array([1.0, 0.0])
    np.testing.assert_allclose(fpr_loss(logits, y, head="ce"), bce_loss(logits, y))
    np.testing.assert_allclose(
        heads.fpr_prob(logits, head="ce"), 1 / (1 + np.exp(-np.array([1.5, -0.5]))), rtol=1e-6
    )
    with pytest.raises(ConfigError):
        fpr_loss(logits, y, head="softmax")


def test_kl_anneal():
    assert float(kl_anneal(0, 100)) == 0.0
    assert float(kl_anneal(50, 100)) == 0.5
    assert float(kl_anneal(500, 100)) == 1.0
    assert float(kl_anneal(3, 0)) == 1.0
