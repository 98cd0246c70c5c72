"""DenseUNet3D: shapes of both tasks and heads, jit/grad, batch independence (GroupNorm),
one Adam step lowers each loss, lowering-independence, paper-size params/MACs (Table 2)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from nodulejax.errors import ConfigError
from nodulejax.losses.fpr import bce_loss, fpr_loss
from nodulejax.models import denseunet
from nodulejax.models.denseunet import DenseUNet3D
from nodulejax.models.layers import count_macs

P = 16
TINY = dict(init_features=4, growth=(4, 6), block_layers=(1, 2), compression=0.5, cls_hidden=8)


@pytest.fixture(scope="module")
def batch():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.uniform(k1, (4, P, P, P, 1))
    y = jnp.array([1.0, 0.0, 1.0, 0.0])
    seg = (jax.random.uniform(k2, (4, P, P, P, 1)) > 0.7).astype(jnp.float32)
    return x, y, seg


@pytest.fixture(scope="module")
def models(batch):
    # xla3d compiles fastest at these sizes (the lowerings are compared in test_layers.py and
    # below); an "rbg" key avoids threefry's slow compile of the jitted init on XLA:CPU
    x = batch[0]
    out = {}
    for head in ("ce", "beta"):
        m = DenseUNet3D(head=head, conv_impl="xla3d", **TINY)
        out[head] = (m, jax.jit(m.init)(jax.random.key(1, impl="rbg"), x[:1]))
    return out


def test_shapes_and_ranges(models, batch):
    x = batch[0]
    m, v = models["ce"]
    assert set(v) == {"params"}  # no mutable batch statistics
    assert {"seg_head", "cls_out"} <= set(v["params"])  # one tree for both tasks
    assert jax.eval_shape(m.apply, v, x).shape == (4,)
    assert jax.eval_shape(functools.partial(m.apply, task="seg"), v, x).shape == (4, P, P, P, 1)
    m, v = models["beta"]
    ev = jax.jit(m.apply)(v, x)
    assert ev.shape == (4, 2) and bool(jnp.all(ev >= 0))
    with pytest.raises(ConfigError):
        m.apply(v, x, task="det")
    with pytest.raises(ConfigError):
        m.apply(v, jnp.zeros((1, 9, 9, 9, 1)))  # not divisible by 2^(levels-1)
    # GroupNorm: an example's output does not depend on the rest of the batch
    np.testing.assert_allclose(jax.jit(m.apply)(v, x[1:2]), ev[1:2], rtol=1e-5, atol=1e-6)


def test_lowerings_agree_on_same_params(models, batch):
    x = batch[0][:1]
    _, v = models["ce"]
    outs = [
        jax.jit(DenseUNet3D(head="ce", conv_impl=i, **TINY).apply)(v, x) for i in ("2dcat", "xla3d")
    ]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def _seg_loss(logits, mask):
    return bce_loss(logits.reshape(-1), mask.reshape(-1)).mean()


@pytest.mark.parametrize("which", ["ce", "beta", "seg"])
def test_adam_step_lowers_loss_and_grad_finite(models, batch, which):
    x, y, seg = batch
    m, v = models["beta" if which == "beta" else "ce"]

    def loss_fn(params, x):
        if which == "seg":
            return _seg_loss(m.apply({"params": params}, x, task="seg"), seg)
        out = m.apply({"params": params}, x, task="cls")
        return fpr_loss(out, y, head=which, kl_weight=1.0).mean()

    opt = optax.adam(1e-3)
    params = v["params"]
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        # gradients w.r.t. the parameters (training) and the input (what PGD needs)
        loss, (g, gx) = jax.value_and_grad(loss_fn, argnums=(0, 1))(params, x)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss, g, gx

    p1, state, l0, g, gx = step(params, state)
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in jax.tree_util.tree_leaves(g))
    assert sum(float(jnp.abs(t).sum()) for t in jax.tree_util.tree_leaves(g)) > 0
    assert bool(jnp.all(jnp.isfinite(gx))) and float(jnp.abs(gx).max()) > 0
    _, _, l1, _, _ = step(p1, state)
    assert float(l1) < float(l0)


def test_from_config_demo_and_default():
    c = default.get_config()
    m = denseunet.from_config(c.fpr, conv_impl="2dcat")
    assert m.growth == tuple(c.fpr.growth) and m.head == c.fpr.head
    c.fpr.growth, c.fpr.block_layers = (3, 3), (1, 1)
    m = denseunet.from_config(c.fpr)
    v = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 8, 1)))
    assert "params" in v


@functools.lru_cache
def _paper_counts():
    m = denseunet.from_config(default.get_config().fpr)
    return count_macs(m, jax.ShapeDtypeStruct((1, 64, 64, 64, 1), jnp.float32), task="cls")


def test_paper_size_matches_table2():
    r = _paper_counts()
    assert abs(r["params"] / 455.98e3 - 1) < 0.10, r["params"]
    assert abs(r["macs"] / 17.24e9 - 1) < 0.20, r["macs"]


def test_count_macs_exact_on_single_conv():
    from nodulejax.models.layers import Conv3D

    r = count_macs(Conv3D(5, 3, strides=2), jax.ShapeDtypeStruct((2, 8, 8, 8, 3), jnp.float32))
    assert r["macs"] == 2 * 4**3 * 27 * 3 * 5
    assert r["params"] == 27 * 3 * 5 + 5
