"""Each 3D-conv lowering equals lax.conv_general_dilated (forward and gradients); pooling,
up-sampling and the Conv3D module's parameter layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nodulejax.errors import ConfigError
from nodulejax.models import layers

jax.config.update("jax_enable_x64", False)


def _ref(x, k, s):
    return lax.conv_general_dilated(
        x,
        k,
        (s, s, s),
        "SAME",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        precision=lax.Precision.HIGHEST,
    )


CASES = [  # (shape (B,D,H,W,Cin), ksize, cout, stride)
    ((2, 6, 7, 5, 3), 3, 4, 1),
    ((2, 6, 7, 5, 3), 3, 4, 2),
    ((1, 7, 6, 8, 2), 3, 3, 2),
    ((1, 4, 4, 4, 2), 1, 3, 1),
    ((1, 5, 6, 7, 2), 2, 3, 2),  # even kernel: asymmetric 'SAME' pads
    ((1, 6, 5, 7, 2), 5, 2, 1),
]


@pytest.mark.parametrize("impl", ["2d", "2dcat", "xla3d"])
@pytest.mark.parametrize("shape,ks,cout,s", CASES)
def test_lowering_matches_conv_general_dilated(impl, shape, ks, cout, s):
    rng = np.random.default_rng(hash((shape, ks, s)) % 2**32)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(ks, ks, ks, shape[-1], cout)), jnp.float32)
    y_ref = _ref(x, k, s)
    y = layers.conv3d(x, k, s, impl)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)

    # gradients w.r.t. input and kernel of a random linear functional of the output
    g = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    f_ref = lambda x, k: jnp.sum(_ref(x, k, s) * g)
    f = lambda x, k: jnp.sum(layers.conv3d(x, k, s, impl) * g)
    gx_r, gk_r = jax.jit(jax.grad(f_ref, (0, 1)))(x, k)
    gx, gk = jax.jit(jax.grad(f, (0, 1)))(x, k)
    np.testing.assert_allclose(gx, gx_r, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gk, gk_r, rtol=1e-4, atol=1e-3)


def test_auto_resolves_by_backend_size_and_override():
    cpu = jax.default_backend() == "cpu"
    expect = "2dcat" if cpu else "xla3d"
    assert layers.resolve_conv_impl("auto") == expect
    assert layers.resolve_conv_impl("auto", (32, 32, 32), 28) == expect
    assert layers.resolve_conv_impl("auto", (64, 64, 64), 1) == expect  # the FPR stem
    assert layers.resolve_conv_impl("auto", (64, 64, 64), 28) == ("2d" if cpu else "xla3d")
    layers.set_default_conv_impl("xla3d")
    try:
        assert layers.resolve_conv_impl("auto") == "xla3d"
        assert layers.resolve_conv_impl("2d") == "2d"  # explicit impl wins
    finally:
        layers.set_default_conv_impl("auto")
    assert layers.resolve_conv_impl("auto") == expect
    with pytest.raises(ConfigError):
        layers.resolve_conv_impl("cudnn")


def test_conv3d_module_params_portable_between_impls():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 8, 3)), jnp.float32)
    m2 = layers.Conv3D(5, kernel_size=3, strides=2, impl="2d")
    v = m2.init(jax.random.key(1, impl="rbg"), x)  # rbg: fast compile on CPU
    assert v["params"]["kernel"].shape == (3, 3, 3, 3, 5)
    assert v["params"]["bias"].shape == (5,)
    y2 = m2.apply(v, x)
    y3 = layers.Conv3D(5, kernel_size=3, strides=2, impl="xla3d").apply(v, x)
    assert y2.shape == (2, 4, 4, 4, 5)
    np.testing.assert_allclose(y2, y3, rtol=1e-4, atol=1e-4)
    # no bias
    v = layers.Conv3D(4, use_bias=False).init(jax.random.key(0, impl="rbg"), x)
    assert set(v["params"]) == {"kernel"}


def test_pooling_matches_reduce_window():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 6, 4, 3)), jnp.float32)
    ref_max = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 2, 1), (1, 2, 2, 2, 1), "VALID")
    ref_avg = lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 2, 1), (1, 2, 2, 2, 1), "VALID") / 8
    np.testing.assert_allclose(layers.max_pool3d(x), ref_max, rtol=1e-6)
    np.testing.assert_allclose(layers.avg_pool3d(x), ref_avg, rtol=1e-5, atol=1e-6)
    # gradient of max pool goes to the arg-max voxel of each window (no ties in random data)
    g = jax.grad(lambda x: layers.max_pool3d(x).sum())(x)
    assert float(g.sum()) == pytest.approx(ref_max.size)
    assert set(np.unique(np.asarray(g))) <= {0.0, 1.0}
    # odd sizes fall back to 'SAME' pooling
    assert layers.max_pool3d(jnp.ones((1, 5, 5, 5, 1))).shape == (1, 3, 3, 3, 1)
    np.testing.assert_allclose(layers.global_avg_pool3d(x), x.mean(axis=(1, 2, 3)), rtol=1e-6)


def test_upsampling():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 3, 4, 2, 2)), jnp.float32)
    up = layers.upsample3d(x, 2, "nearest")
    assert up.shape == (1, 6, 8, 4, 2)
    np.testing.assert_array_equal(up[:, ::2, ::2, ::2], x)
    np.testing.assert_array_equal(up[:, 1::2, 1::2, 1::2], x)
    tri = layers.upsample3d(jnp.ones((1, 2, 2, 2, 1)), 2, "trilinear")
    np.testing.assert_allclose(tri, 1.0, rtol=1e-6)
    # voxel shuffle is a permutation: each block of 8 channels fills one 2x2x2 block
    y = jnp.arange(8.0).reshape(1, 1, 1, 1, 8)
    vs = layers.voxel_shuffle(y, 2)
    assert vs.shape == (1, 2, 2, 2, 1)
    np.testing.assert_array_equal(np.sort(np.asarray(vs).ravel()), np.arange(8.0))
    assert float(vs[0, 1, 0, 1, 0]) == 5.0  # (dz, dy, dx) = (1, 0, 1) -> channel 4 + 1
    for mode in ("nearest", "trilinear", "shuffle"):
        m = layers.UpConv3D(3, mode=mode, impl="2d")
        v = m.init(jax.random.key(0, impl="rbg"), x)
        assert m.apply(v, x).shape == (1, 6, 8, 4, 3)


def test_group_norm_equals_flax_group_norm():
    """layers.GroupNorm: same parameters (names, shapes) and outputs / gradients as
    flax.linen.GroupNorm with the same groups and epsilon."""
    import flax.linen as nn

    from nodulejax.models.layers import GroupNorm

    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, (2, 4, 5, 6, 12)), jnp.float32)
    for g in (1, 3, 4, 12):
        ours, ref = GroupNorm(num_groups=g), nn.GroupNorm(num_groups=g, epsilon=1e-5)
        p = ref.init(jax.random.key(0), x)
        assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
            jnp.shape, p)
        p = jax.tree.map(lambda a: a + jnp.linspace(-0.5, 0.5, a.size).reshape(a.shape), p)
        np.testing.assert_allclose(ours.apply(p, x), ref.apply(p, x), rtol=1e-5, atol=1e-5)
        w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
        gx = jax.grad(lambda v, m=ours, p=p, w=w: jnp.sum(m.apply(p, v) * w))(x)
        gr = jax.grad(lambda v, m=ref, p=p, w=w: jnp.sum(m.apply(p, v) * w))(x)
        np.testing.assert_allclose(gx, gr, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(num_groups=5).init(jax.random.key(0), x)


@pytest.mark.parametrize("impl", ["2d", "2dcat"])
def test_strided_lowering_second_order_matches(impl):
    """The gradient penalty's second-order derivative (d/dk of |dL/dx|^2, paper Eq. 5)
    through a strided convolution equals lax.conv_general_dilated's."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(2, 6, 7, 5, 3)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 3, 3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 3, 4, 3, 4)), jnp.float32)

    def penalty(conv):
        gx = lambda x, k: jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, k)) * g))(x)
        return lambda x, k: jnp.sum(gx(x, k) ** 2)

    ours = penalty(lambda x, k: layers.conv3d(x, k, 2, impl))
    ref = penalty(lambda x, k: _ref(x, k, 2))
    np.testing.assert_allclose(ours(x, k), ref(x, k), rtol=1e-4)
    for a, b in zip(jax.jit(jax.grad(ours, (0, 1)))(x, k), jax.jit(jax.grad(ref, (0, 1)))(x, k),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
