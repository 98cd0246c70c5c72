"""nodulejax.losses.detection: blob heatmap targets and losses, RPN loss terms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.losses.detection import (
    heatmap_blob_bce_loss,
    heatmap_focal_loss,
    heatmap_loss,
    heatmap_target,
    rpn_loss,
    smooth_l1,
)


def test_heatmap_target_properties():
    sigma = 2.0
    t = np.asarray(heatmap_target((12, 12, 12), np.array([[3.0, 4.0, 5.0], [8.2, 8.0, 7.9]]),
                                  sigma))
    assert t.shape == (12, 12, 12) and t.min() >= 0 and t.max() <= 1
    assert t[3, 4, 5] == pytest.approx(1.0) and t[8, 8, 8] == pytest.approx(1.0)  # rounded
    # value at distance r from a centre: exp(-r^2 / (2 sigma^2)), blobs max-combined
    assert t[3, 4, 7] == pytest.approx(math.exp(-4 / 8), rel=1e-5)
    assert t[3, 6, 7] == pytest.approx(math.exp(-8 / 8), rel=1e-5)
    mid = t[6, 6, 6]
    expect = max(math.exp(-(9 + 4 + 1) / 8), math.exp(-(4 + 4 + 4) / 8))
    assert mid == pytest.approx(expect, rel=1e-5)
    assert np.all(np.asarray(heatmap_target((4, 5, 6), np.zeros((0, 3)), 1.0)) == 0)
    masked = heatmap_target((12, 12, 12), np.array([[3.0, 4.0, 5.0], [8.0, 8.0, 8.0]]), sigma,
                            valid=np.array([True, False]))
    # only the first blob is left: at (8, 8, 8) its value exp(-(25 + 16 + 9) / 8)
    assert float(masked[8, 8, 8]) == pytest.approx(math.exp(-50 / 8), rel=1e-4)
    assert float(masked[3, 4, 5]) == pytest.approx(1.0)

def test_focal_loss_hand_computed():
    # two voxels: a centre (Y = 1) and a blob shoulder (Y = 0.5), both at logit 0 (P = 0.5)
    logits = jnp.zeros((1, 1, 1, 2, 1))
    target = jnp.array([1.0, 0.5]).reshape(1, 1, 1, 2, 1)
    pos = -(0.5**2) * math.log(0.5)
    neg = -(0.5**4) * 0.5**2 * math.log(0.5)
    assert float(heatmap_focal_loss(logits, target)[0]) == pytest.approx(pos + neg, rel=1e-5)
    # no centre: negatives only, normalised by 1; a logit of 2 on pure background
    t0 = jnp.zeros((1, 1, 1, 2, 1))
    l0 = jnp.array([2.0, -1.0]).reshape(1, 1, 1, 2, 1)
    p = 1 / (1 + np.exp(-np.array([2.0, -1.0])))
    expect = -np.sum(p**2 * np.log(1 - p))
    assert float(heatmap_focal_loss(l0, t0)[0]) == pytest.approx(expect, rel=1e-5)
    # two centres: normalised by N_pos = 2
    l2 = jnp.array([1.0, 3.0]).reshape(1, 1, 1, 2, 1)
    p2 = 1 / (1 + np.exp(-np.array([1.0, 3.0])))
    expect2 = -np.sum((1 - p2) ** 2 * np.log(p2)) / 2
    assert float(heatmap_focal_loss(l2, jnp.ones((1, 1, 1, 2, 1)))[0]) == pytest.approx(
        expect2, rel=1e-5)
    # large logits stay finite
    big = heatmap_focal_loss(jnp.array([-80.0, 80.0]).reshape(1, 1, 1, 2), target[..., 0])
    assert np.isfinite(float(big[0]))

def test_blob_bce_hand_computed_and_minimised_by_the_target():
    # voxels Y = (1, 0.5, 0), logits 0 (P = 0.5): BCE = log 2 everywhere, weights 1 + 50 Y
    logits = jnp.zeros((1, 1, 1, 3, 1))
    target = jnp.array([1.0, 0.5, 0.0]).reshape(1, 1, 1, 3, 1)
    assert float(heatmap_blob_bce_loss(logits, target)[0]) == pytest.approx(math.log(2), 1e-5)
    # a non-uniform case by hand: weights 51, 26, 1
    l2 = jnp.array([2.0, -1.0, -3.0]).reshape(1, 1, 1, 3, 1)
    p = 1 / (1 + np.exp(-np.array([2.0, -1.0, -3.0])))
    y = np.array([1.0, 0.5, 0.0])
    w = 1 + 50 * y
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    got = float(heatmap_blob_bce_loss(l2, target)[0])
    assert got == pytest.approx(float((w * bce).sum() / w.sum()), rel=1e-5)
    # the soft target itself is the minimiser: its logits have zero gradient
    y_in = jnp.array([0.9, 0.5, 0.1]).reshape(1, 1, 1, 3)
    g = jax.grad(lambda z: heatmap_blob_bce_loss(z, y_in)[0])(jnp.log(y_in / (1 - y_in)))
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)
    assert float(heatmap_loss(logits, target, "blob_bce")[0]) == pytest.approx(math.log(2), 1e-5)
    with pytest.raises(ValueError, match="blob_bce"):
        heatmap_loss(logits, target, "mse")


def test_smooth_l1_and_loss_terms():
    b = 1.0 / 9.0
    x = jnp.array([0.0, 0.05, -0.05, 1.0, -2.0])
    np.testing.assert_allclose(smooth_l1(x, b),
                               [0.0, 0.5 * 0.0025 / b, 0.5 * 0.0025 / b, 1 - b / 2, 2 - b / 2],
                               rtol=1e-5)
    # perfect regression, all anchors sampled (num_samples >> N): loss = mean BCE
    labels = jnp.array([[1, 0, -1, 0]])
    obj = jnp.array([[2.0, -1.0, 5.0, 0.0]])
    d = jnp.zeros((1, 4, 4))
    loss = rpn_loss(obj, d, labels, d, jax.random.key(0), num_samples=1000, pos_fraction=1.0)
    bce = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(0.0))]
    assert float(loss[0]) == pytest.approx(np.mean(bce), rel=1e-5)
    # a regression error on the positive adds smooth-L1; on a negative it adds nothing
    d_err = d.at[0, 0, 0].set(1.0).at[0, 1, 1].set(3.0)
    loss2 = rpn_loss(obj, d_err, labels, d, jax.random.key(0), num_samples=1000,
                     pos_fraction=1.0, reg_weight=2.0)
    assert float(loss2[0]) == pytest.approx(np.mean(bce) + 2 * (1 - b / 2), rel=1e-5)
