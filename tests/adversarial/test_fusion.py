"""Fusion operator of Section 3.2: values, mask gradient conventions, and the gradient with
respect to the latent code through a real VAE decoder (what latent PGD needs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.adversarial import fusion
from nodulejax.models.vae import VAE


def _pair():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x_syn = jax.random.uniform(k1, (2, 4, 4, 4, 1))
    bg = jax.random.uniform(k2, (2, 4, 4, 4, 1))
    return x_syn, bg


def test_fuse_values():
    x_syn, bg = _pair()
    out = fusion.fuse(x_syn, bg, 0.4)
    xs, b = np.asarray(x_syn), np.asarray(bg)
    np.testing.assert_array_equal(out, np.where(xs > 0.4, xs, b))
    # threshold 1: background only; threshold below 0: synthetic only
    np.testing.assert_array_equal(fusion.fuse(x_syn, bg, 1.0), bg)
    np.testing.assert_array_equal(fusion.fuse(x_syn, bg, -1.0), x_syn)
    with pytest.raises(ValueError):
        fusion.fuse(x_syn, bg[:, :2], 0.4)


def test_constant_mask_gradient():
    x_syn, bg = _pair()
    r = jax.random.normal(jax.random.PRNGKey(1), x_syn.shape)
    f = lambda xs, b: jnp.sum(fusion.fuse(xs, b, 0.4) * r)
    gs, gb = jax.grad(f, (0, 1))(x_syn, bg)
    m = np.asarray(x_syn) > 0.4
    np.testing.assert_allclose(gs, np.where(m, r, 0.0), rtol=1e-6)
    np.testing.assert_allclose(gb, np.where(m, 0.0, r), rtol=1e-6)


def test_straight_through_mask():
    x_syn, bg = _pair()
    tau, t = 0.05, 0.4
    out = fusion.fuse(x_syn, bg, t, surrogate_temperature=tau)
    np.testing.assert_array_equal(out, fusion.fuse(x_syn, bg, t))  # same forward
    g = jax.grad(lambda xs: fusion.fuse(xs, bg, t, surrogate_temperature=tau).sum())(x_syn)
    xs, b = np.asarray(x_syn, np.float64), np.asarray(bg, np.float64)
    s = 1 / (1 + np.exp(-(xs - t) / tau))
    expect = (xs > t) + (xs - b) * s * (1 - s) / tau  # d/dxs [xs m + b (1 - m)]
    np.testing.assert_allclose(g, expect, rtol=1e-4, atol=1e-5)


def test_paste_center():
    small = jnp.ones((1, 2, 2, 2, 1))
    big = fusion.paste_center(small, 6)
    assert big.shape == (1, 6, 6, 6, 1) and float(big.sum()) == 8.0
    assert float(big[0, 2:4, 2:4, 2:4].sum()) == 8.0


def test_gradient_wrt_latent_through_decoder():
    # default constant-mask gradient (the straight-through variant is checked analytically
    # in test_straight_through_mask)
    m = VAE(latent_dim=8, width=4, patch_size=16, conv_impl="xla3d")
    v = jax.jit(m.init)(
        jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 16, 1)), jax.random.PRNGKey(1)
    )
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 8))
    bg = jax.random.uniform(jax.random.PRNGKey(3), (2, 16, 16, 16, 1))
    r = jax.random.normal(jax.random.PRNGKey(4), bg.shape)

    def objective(z):
        x_syn = m.apply(v, z, method=VAE.decode)
        return jnp.sum(fusion.fuse(x_syn, bg, 0.5) * r)

    x_syn = m.apply(v, z, method=VAE.decode)
    frac = float((x_syn > 0.5).mean())
    assert 0.0 < frac < 1.0  # the mask selects part of the patch
    g = jax.jit(jax.grad(objective))(z)
    assert g.shape == z.shape
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).min()) > 0
