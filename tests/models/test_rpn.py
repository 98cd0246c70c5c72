"""3D RPN head on the ResUNet (nodulejax.models.rpn) and its losses (nodulejax.losses.detection)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nodulejax.losses.detection import rpn_loss, rpn_targets, sample_anchors
from nodulejax.models import boxes as bx
from nodulejax.models.rpn import ResUNetRPN, anchors_for, rpn_proposals

SHAPE = (2, 16, 16, 16, 1)
ANCHORS_MM = (2.5, 5.0)  # with 0.625 mm spacing: 4- and 8-voxel cubes
SPACING = 0.625


def init_variables(model, shape, seed=0):
    """numpy-drawn parameters with model.init's tree (see tests/models/test_resunet.py for why)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct(shape, jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), jnp.float32)
        return jnp.ones(leaf.shape) if name == "scale" else jnp.zeros(leaf.shape)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def setup():
    model = ResUNetRPN(width=4, depth=2, num_anchors=2, rpn_width=8, rpn_stride=2,
                       conv_impl="xla3d")
    variables = init_variables(model, SHAPE)
    anchors = anchors_for(model, SHAPE[1:4], ANCHORS_MM, SPACING)
    gt = jnp.array([[[5.0, 6.0, 7.0, 5.0], [0.0, 0.0, 0.0, 1.0]],
                    [[10.0, 9.0, 4.0, 8.0], [4.0, 11.0, 11.0, 4.0]]])
    valid = jnp.array([[True, False], [True, True]])
    return model, variables, anchors, gt, valid


def test_shapes_match_anchors(setup):
    model, variables, anchors, _, _ = setup
    out = jax.eval_shape(model.apply, variables, jnp.zeros(SHAPE))
    n = 8 * 8 * 8 * 2
    assert anchors.shape == (n, 4)
    assert out["objectness"].shape == (2, n) and out["deltas"].shape == (2, n, 4)
    assert out["heatmap"].shape == SHAPE
    np.testing.assert_allclose(sorted(set(np.asarray(anchors[:, 3]).tolist())), [4.0, 8.0])
    with pytest.raises(ValueError, match="anchors"):
        anchors_for(model, SHAPE[1:4], (5.0, 10.0, 20.0), SPACING)


def test_targets_and_sampling(setup):
    _, _, anchors, gt, valid = setup
    labels, tdeltas = rpn_targets(anchors, gt, valid)
    assert labels.shape == (2, anchors.shape[0]) and tdeltas.shape == (2, anchors.shape[0], 4)
    assert int(jnp.sum(labels[0] == 1)) >= 1 and int(jnp.sum(labels[1] == 1)) >= 2
    # positives' target deltas decode back to their matched GT box
    pos = np.where(np.asarray(labels[1]) == 1)[0]
    dec = np.asarray(bx.decode_boxes(tdeltas[1, pos], anchors[pos]))
    assert all(np.min(np.abs(dec[:, None] - np.asarray(gt[1])[None]).sum(-1), 1) < 1e-3)
    mask = sample_anchors(jax.random.key(1), labels, num_samples=64, pos_fraction=0.25)
    assert not np.any(np.asarray(mask) & (np.asarray(labels) == -1))
    n_sampled = np.asarray(mask).sum(1)
    assert np.all(n_sampled > 20) and np.all(n_sampled < 120)


def test_adam_step_lowers_rpn_loss_and_proposals(setup):
    model, variables, anchors, gt, valid = setup
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, SHAPE), jnp.float32)
    labels, tdeltas = rpn_targets(anchors, gt, valid)
    key = jax.random.key(3)  # fixed sampling: a fixed objective
    opt = optax.adam(3e-3)

    def loss_fn(params):
        out = model.apply({"params": params}, x)
        return jnp.mean(rpn_loss(out["objectness"], out["deltas"], labels, tdeltas, key))

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = variables["params"], opt.init(variables["params"])
    losses = []
    for _ in range(3):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[2] < losses[1] < losses[0]

    out = jax.jit(model.apply)({"params": params}, x)
    boxes, scores, ok = rpn_proposals(out["objectness"][0], out["deltas"][0], anchors,
                                      max_output=5, iou_threshold=0.1, pre_nms_top_n=64)
    assert boxes.shape == (5, 4) and scores.shape == (5,) and int(ok.sum()) <= 5
    s = np.asarray(scores)[np.asarray(ok)]
    assert np.all((s > 0) & (s < 1)) and np.all(np.diff(s) <= 0)
    iou = np.asarray(bx.box_iou(boxes, boxes))[np.ix_(np.asarray(ok), np.asarray(ok))]
    assert np.all(iou[~np.eye(len(iou), dtype=bool)] <= 0.1 + 1e-6)
