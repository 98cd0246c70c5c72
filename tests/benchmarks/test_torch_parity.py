"""The PyTorch twin of DenseUNet3D (benchmarks/torch_denseunet.py) computes the same function
as the Flax model from the same weights: forward outputs (cls and seg, both heads, every
up_mode) in float32, and input gradients of the FPR loss in float64 (in float32 a near-tie in
max pooling can be decided differently by round-off and route one example's gradient through
another voxel, so gradients are compared where round-off cannot flip the argmax). Also the
torch FPR loss against nodulejax.losses and one torch PGD run against the eps-ball contract.

Skipped when torch is not installed (CI; torch is in the ``bench`` extra).
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (pyproject extra 'bench')")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import torch_denseunet as td  # noqa: E402

from nodulejax.losses.fpr import fpr_loss  # noqa: E402
from nodulejax.models.denseunet import DenseUNet3D  # noqa: E402

P = 16
TINY = dict(init_features=4, growth=(4, 6), block_layers=(1, 2), compression=0.5, cls_hidden=8)
CASES = [
    dict(head="beta"),
    dict(head="ce", up_mode="trilinear"),
    dict(head="beta", up_mode="shuffle"),
    dict(head="ce", up_mode="resize_conv", compression=1.0),
]


@pytest.fixture(scope="module")
def batch():
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, P, P, P, 1))
    return x, jnp.array([1.0, 0.0, 1.0])


def _build(case, x):
    m = DenseUNet3D(**dict(TINY, **case), conv_impl="2dcat")
    v = jax.jit(m.init)(jax.random.PRNGKey(1), x[:1])
    return m, v, td.from_flax(m, v)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['head']}-{c.get('up_mode', 'nearest')}")
def test_forward_and_input_grad_agree(case, batch):
    x, y = batch
    m, v, tm = _build(case, x)
    xt = td.to_torch_input(x)
    with torch.no_grad():
        out_t = tm(xt).numpy()
        seg_t = tm(xt, task="seg").numpy().transpose(0, 2, 3, 4, 1)
    both = jax.jit(lambda v, x: (m.apply(v, x), m.apply(v, x, task="seg")))
    out_j, seg_j = (np.asarray(a) for a in both(v, x))
    assert out_t.shape == out_j.shape and seg_t.shape == seg_j.shape
    np.testing.assert_allclose(out_t, out_j, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(seg_t, seg_j, rtol=1e-4, atol=1e-4)

    if case.get("up_mode") in ("shuffle", "resize_conv"):
        return  # forward parity only (keeps the file fast); grads checked on the other modes
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.asarray(x), jnp.float64)
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), v)
        y64 = jnp.asarray(np.asarray(y), jnp.float64)
        f = lambda xx: fpr_loss(m.apply(v64, xx), y64, head=m.head).sum()
        g_j = np.asarray(jax.jit(jax.grad(f))(x64)).transpose(0, 4, 1, 2, 3)
    tm64 = tm.double()
    xt64 = torch.from_numpy(np.asarray(x, np.float64).transpose(0, 4, 1, 2, 3).copy())
    g_t = td.make_loss_grad(tm64, m.head)(xt64, torch.tensor(np.asarray(y, np.float64))).numpy()
    assert np.abs(g_j).max() > 0
    np.testing.assert_allclose(g_t, g_j, rtol=1e-6, atol=1e-7 * np.abs(g_j).max())


def test_converter_moves_every_weight(batch):
    """Every Flax leaf lands in exactly one torch parameter and every torch parameter is
    written: perturbing any leaf changes exactly one torch tensor (a bias that a GroupNorm
    cancels would not show in the outputs, so state dicts are compared)."""
    x, _ = batch
    m, v, tm = _build(CASES[0], x)
    base = {k: t.clone() for k, t in tm.state_dict().items()}
    flat, tree = jax.tree_util.tree_flatten_with_path(v["params"])
    assert sum(int(np.prod(lf.shape)) for _, lf in flat) == sum(t.numel() for t in base.values())
    hit = set()
    for i, (path, leaf) in enumerate(flat):
        leaves = [lf for _, lf in flat]
        leaves[i] = leaf + 0.5
        sd = td.from_flax(m, {"params": jax.tree_util.tree_unflatten(tree, leaves)}).state_dict()
        changed = [k for k in base if not torch.equal(sd[k], base[k])]
        assert len(changed) == 1, (jax.tree_util.keystr(path), changed)
        hit.add(changed[0])
    assert hit == set(base)


@pytest.mark.parametrize("head", ["ce", "beta"])
def test_torch_fpr_loss_matches(head):
    rng = np.random.default_rng(0)
    out = rng.normal(size=(6,) if head == "ce" else (6, 2)).astype(np.float32)
    if head == "beta":
        out = np.abs(out) * 3
    y = np.array([1, 0, 1, 0, 1, 0], np.float32)
    want = np.asarray(fpr_loss(jnp.asarray(out), jnp.asarray(y), head=head, kl_weight=0.7))
    got = td.torch_fpr_loss(torch.tensor(out), torch.tensor(y), head, 0.7).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_torch_pgd_stays_in_ball_and_raises_loss(batch):
    x, _ = batch
    m, v, tm = _build(CASES[0], x)
    xt = td.to_torch_input(x)
    y = torch.ones(xt.shape[0])
    eps = 0.05
    gen = torch.Generator().manual_seed(0)
    xa = td.torch_pgd_linf(
        td.make_loss_grad(tm, "beta"), xt, y, eps=eps, step_size=0.02, steps=5, generator=gen
    )
    assert (xa - xt).abs().max() <= eps + 1e-6
    assert xa.min() >= 0 and xa.max() <= 1
    with torch.no_grad():
        before = td.torch_fpr_loss(tm(xt), y, "beta")
        after = td.torch_fpr_loss(tm(xa), y, "beta")
    assert (after >= before).all()
