"""train_cg: the three CG stages train, their losses are finite and fall on a fixed batch, and
a rerun skips finished stages (tiny phantom, configs/tiny.py sizes)."""

import os

import jax
import numpy as np
import pytest

from configs import tiny
from nodulejax.data import luna16, prepare
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.train import cg
from nodulejax.train.loop import _jitted

pytestmark = pytest.mark.slow  # CG and RPN training on a phantom: ~70 s on 2 cores


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cgphantom"))
    generate_dataset(root, num_scans=4, seed=3, size_scale=0.3, num_subsets=4,
                     max_voxels=300_000)
    c = tiny.get_config()
    scans = prepare.prepare_folds(luna16.Luna16Dataset(root), [0, 1, 2, 3],
                                  spacing=float(c.data.spacing),
                                  window=tuple(c.data.hu_window))
    workdir = str(tmp_path_factory.mktemp("cgwork"))
    out = cg.train_cg(c, workdir, scans, progress=False, async_save=False)
    return c, scans, workdir, out


def test_stages_run_with_finite_loss(setup):
    c, _, workdir, out = setup
    steps = {"cg": c.cg.steps, "cg_ggo": c.cg.ggo_steps, "rpn": c.cg.rpn_steps}
    for name, n in steps.items():
        res = out["results"][name]
        assert res.step == n and res.resumed_from is None
        assert np.isfinite(res.last_metrics["loss"])
        assert os.path.isdir(os.path.join(workdir, "checkpoints", name, "latest"))
    # GGO and RPN start from the first network: their params differ from it after training
    a = jax.tree.leaves(out["cg"])
    b = jax.tree.leaves(out["cg_ggo"])
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=False))
    assert set(out["rpn"]) == {"backbone", "rpn"}
    assert jax.tree.structure(out["rpn"]["backbone"]) == jax.tree.structure(out["cg"])


def _run_fixed(step_obj, params, batch, n=6):
    fn = _jitted(step_obj, True)  # the function fit compiled: no new compilation
    state = {"params": jax.tree.map(np.array, params), "opt_state": step_obj.tx.init(params)}
    key = jax.random.key(0)
    losses = []
    for i in range(n):
        state, m = fn(state, batch, key, np.int32(i))
        losses.append(float(m["loss"]))
    return losses


def test_losses_fall_on_fixed_batch(setup):
    c, scans, _, out = setup
    batch = cg.make_batch_fn(c, scans, "cg")(0)
    batch["valid"][:, 0] = True  # make sure every crop has a centre to learn
    hstep = cg.heatmap_step(cg.cg_model(c), float(c.cg.lr), cg.blob_sigma_vox(c))
    losses = _run_fixed(hstep, out["cg"], batch)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    rstep = cg.rpn_step(cg.rpn_model(c), float(c.cg.lr), int(c.cg.input_size),
                        tuple(float(a) for a in c.cg.anchors_mm), float(c.data.spacing))
    batch["boxes"][:, 0, 3] = np.maximum(batch["boxes"][:, 0, 3], 3.0)
    losses = _run_fixed(rstep, out["rpn"], batch)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_rerun_skips_finished_stages(setup):
    c, scans, workdir, out = setup
    again = cg.train_cg(c, workdir, scans, progress=False, async_save=False)
    for name in cg.STAGES:
        assert again["results"][name].resumed_from == out["results"][name].step
        for x, y in zip(jax.tree.leaves(again[name]), jax.tree.leaves(out[name]), strict=False):
            np.testing.assert_array_equal(x, y)


def test_batches_pure_in_step_and_ggo_fallback(setup, caplog):
    c, scans, _, _ = setup
    f = cg.make_batch_fn(c, scans, "cg")
    a, b = f(3), f(3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(f(3)["image"], f(4)["image"])
    untyped = [prepare.PreparedScan(**{**s.__dict__, "nodule_types": np.array(
        ["unknown"] * len(s.nodules_zyx), object)}) for s in scans]
    with caplog.at_level("WARNING"):
        assert cg.ggo_subset_types(c, untyped) is None
    assert "all nodules" in caplog.text


def test_rpn_fields_change_the_rpn_loss(setup):
    """cg.rpn_pos_iou / rpn_neg_iou / rpn_num_samples / rpn_pos_fraction reach the loss."""
    c, scans, _, out = setup
    batch = cg.make_batch_fn(c, scans, "rpn")(0)
    batch["valid"][:, 0] = True
    batch["boxes"][:, 0, 3] = np.maximum(batch["boxes"][:, 0, 3], 3.0)
    args = (cg.rpn_model(c), float(c.cg.lr), int(c.cg.input_size),
            tuple(float(a) for a in c.cg.anchors_mm), float(c.data.spacing))
    key = jax.random.key(0)
    base = float(cg.rpn_step(*args, 0.5, 0.2, 256, 0.5).loss_fn(out["rpn"], batch, key))
    assert base == float(cg.rpn_step(*args).loss_fn(out["rpn"], batch, key))  # the defaults
    for kw in ((0.05, 0.01, 256, 0.5), (0.5, 0.2, 4, 0.5)):
        other = float(cg.rpn_step(*args, *kw).loss_fn(out["rpn"], batch, key))
        assert np.isfinite(other) and other != base, kw
    # the positive share matters once it binds (few samples): 4 vs 0.4 positives wanted
    few = float(cg.rpn_step(*args, 0.5, 0.2, 8, 0.5).loss_fn(out["rpn"], batch, key))
    assert few != float(cg.rpn_step(*args, 0.5, 0.2, 8, 0.05).loss_fn(out["rpn"], batch, key))


def test_ggo_crops_centred_on_ggo_nodules(setup):
    c, scans, _, _ = setup
    types = cg.ggo_subset_types(c, scans)
    if types is None:
        pytest.skip("no ground-glass / part-solid nodules in the test phantom")
    b = cg.make_batch_fn(c, scans, "cg_ggo", types)(0)
    assert b["valid"].any(1).all()  # every crop holds a nodule (c.cg.ggo_pos_fraction = 1)
