"""ResUNet3D candidate generator, blob heatmap targets and the heatmap focal loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nodulejax.losses.detection import (
    heatmap_focal_loss,
    heatmap_target,
)
from nodulejax.models.resunet import ResUNet3D, level_widths

SHAPE = (2, 16, 16, 16, 1)


def init_variables(model, shape, seed=0):
    """Parameters of `model` drawn with numpy (LeCun-normal kernels, unit GroupNorm scales,
    zero biases): same tree as model.init, without compiling the jitted initialiser (tens of
    seconds of XLA:CPU compile time for the random-number code on the shared test machine)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape,
                                                                                jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), jnp.float32)
        return jnp.ones(leaf.shape) if name == "scale" else jnp.zeros(leaf.shape)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def model_and_vars():
    model = ResUNet3D(width=4, depth=3)
    return model, init_variables(model, SHAPE)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.2, SHAPE).astype(np.float32)
    centres = [np.array([[5.0, 6.0, 7.0]]), np.array([[10.0, 4.0, 11.0], [3.0, 12.0, 12.0]])]
    y = np.stack([np.asarray(heatmap_target(SHAPE[1:4], c, 1.5)) for c in centres])[..., None]
    x = x + 0.8 * y  # bright blobs where the centres are
    return jnp.asarray(x), jnp.asarray(y)


def test_shapes_params_and_purity(model_and_vars):
    model, variables = model_and_vars
    real = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(SHAPE))
    assert set(real) == {"params"}  # GroupNorm: no mutable batch statistics
    assert jax.tree.structure(real) == jax.tree.structure(variables)
    logits, feats = jax.eval_shape(model.apply, variables, jnp.zeros(SHAPE))
    assert logits.shape == SHAPE and feats.shape == SHAPE[:4] + (4,)
    # non-cubic and odd sizes (shape inference only, nothing compiled)
    out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 9, 10, 12, 1),
                                                                      jnp.float32))
    assert out[0].shape == (1, 9, 10, 12, 1) and out[1].shape == (1, 9, 10, 12, 4)
    assert level_widths(4, 3) == (4, 8, 16) and level_widths(16, 3, 1.0) == (16, 16, 16)
    wide = ResUNet3D(widths=(4, 6))
    v = jax.eval_shape(wide.init, jax.random.key(0), jax.ShapeDtypeStruct(SHAPE, jnp.float32))
    assert set(v["params"]) >= {"enc0", "enc1", "dec0", "head"}
    assert "enc2" not in v["params"]


def test_head_starts_at_the_focal_prior():
    """The heatmap head's bias starts at -log((1 - pi) / pi) (pi = 0.1 by default)."""
    for prior in (0.1, 0.01):
        shapes = jax.eval_shape(ResUNet3D(width=2, depth=2, head_prior=prior).init,
                                jax.random.key(0), jax.ShapeDtypeStruct(SHAPE, jnp.float32))
        assert shapes["params"]["head"]["bias"].shape == (1,)
        params = ResUNet3D(width=2, depth=2, head_prior=prior).init(
            jax.random.key(0), jnp.zeros((1, 4, 4, 4, 1)))["params"]
        assert float(params["head"]["bias"][0]) == pytest.approx(-math.log((1 - prior) / prior),
                                                                 rel=1e-6)


def test_jit_grad_and_adam_step_lowers_heatmap_loss(batch):
    # depth 2 and the plain XLA lowering: the smallest compile on the shared CPU (the
    # lowerings are checked against each other in test_layers.py)
    model = ResUNet3D(width=4, depth=2, conv_impl="xla3d")
    variables = init_variables(model, SHAPE)
    x, y = batch
    opt = optax.adam(3e-3)

    def loss_fn(params):
        logits, _ = model.apply({"params": params}, x)
        return jnp.mean(heatmap_focal_loss(logits, y))

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    params = variables["params"]
    opt_state = opt.init(params)
    losses = []
    for _ in range(3):
        params, opt_state, loss, grads = step(params, opt_state)
        losses.append(float(loss))
        assert np.isfinite(losses[-1])
        if len(losses) == 1:
            leaves = jax.tree.leaves(grads)
            assert all(np.all(np.isfinite(g)) for g in leaves)
            assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0
    assert losses[1] < losses[0] and losses[2] < losses[1]


def test_bad_head_prior_names_the_field():
    from configs import tiny
    from nodulejax.errors import ConfigError
    from nodulejax.models.resunet import build_resunet

    c = tiny.get_config()
    for bad in (0.0, 1.0, 1.5):
        c.cg.head_prior = bad
        with pytest.raises(ConfigError, match="config.cg.head_prior"):
            build_resunet(c.cg)
