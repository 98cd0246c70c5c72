"""FPR trainers (nodulejax.train.fpr, nodulejax.train.augment) on a tiny phantom, tiny config.

One module-scoped chain of real runs: fpr_seg -> baseline-ce -> baseline-beta-finetune ->
beta+perturb+syn from a pool folder and generated in the loop. The stages train on a fixed
batch (as many patches as the batch holds, no flips) so that their loss must fall; metrics
come from the runs' metrics.jsonl.
"""

import json
import os

import jax
import numpy as np
import pytest

from configs import tiny
from nodulejax.adversarial.pool.store import shard_path, write_shard
from nodulejax.data import luna16, prepare
from nodulejax.data.patchsets import fpr_patches, seg_patches
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.errors import CheckpointError
from nodulejax.runtime import checkpoint
from nodulejax.train import fpr
from tests.train.helpers import fpr_test_config

pytestmark = pytest.mark.slow  # the FPR stage chain (seg -> ce -> finetune -> augmented): ~45 s


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("phantom"))
    generate_dataset(root, num_scans=4, seed=1, size_scale=0.3, num_subsets=4,
                     max_voxels=300_000)
    c = tiny.get_config()
    return prepare.prepare_folds(luna16.Luna16Dataset(root), [0, 1, 2, 3],
                                 spacing=c.data.spacing, window=c.data.hu_window)


@pytest.fixture(scope="module")
def patches(scans):
    p = fpr_test_config().fpr.patch_size
    allp = fpr_patches(scans, p)
    pos, neg = np.flatnonzero(allp["y"] == 1), np.flatnonzero(allp["y"] == 0)
    assert len(pos) >= 2 and len(neg) >= 2
    keep = np.concatenate([pos[:2], neg[:2]])  # batch 4 = the whole training set
    train = {k: v[keep] for k, v in allp.items()}
    return {"train": train, "val": allp}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fpr_wd"))


def _losses(workdir, model):
    rows = [json.loads(line) for line in open(f"{workdir}/logs/{model}/metrics.jsonl")]
    return [r["loss"] for r in rows if r["split"] == "train"]


def _falls(ls):
    assert len(ls) >= 3 and np.all(np.isfinite(ls)), ls
    assert ls[-1] < ls[0], ls


# ----------------------------------------------------------------------------- pure parts
def test_roc_auc_perfect_reversed_ties_and_brute_force():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert fpr.roc_auc(s, y) == 1.0
    assert fpr.roc_auc(-s, y) == 0.0
    assert fpr.roc_auc(np.full(6, 0.4), y) == 0.5
    assert np.isnan(fpr.roc_auc(s, np.ones(6)))
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.integers(0, 2, 200)
    d = s[y == 1][:, None] - s[y == 0][None, :]
    brute = (np.sum(d > 0) + 0.5 * np.sum(d == 0)) / d.size
    assert fpr.roc_auc(s, y) == pytest.approx(brute, abs=1e-12)


def test_model_names_are_valid_checkpoint_dirs(tmp_path):
    assert fpr.model_name("baseline-ce") == "fpr_baseline-ce"
    assert fpr.model_name("beta+syn") == "fpr_beta+syn"
    names = {fpr.model_name(r) for r in __import__("configs.experiments").experiments.EXPERIMENTS}
    assert len(names) == 9
    for n in names:
        checkpoint.model_dir(str(tmp_path), n)  # raises on an invalid name


# ----------------------------------------------------------------------------- training chain
@pytest.fixture(scope="module")
def seg_params(scans, workdir):
    c = fpr_test_config()
    sp = seg_patches(scans, c.fpr.patch_size, seed=0)
    sp = {k: v[:c.fpr.batch_size] for k, v in sp.items()}
    return fpr.train_fpr_seg(c, workdir, scans, patches=sp)


@pytest.fixture(scope="module")
def ce_params(seg_params, patches, workdir):
    return fpr.train_fpr_experiment(fpr_test_config(), workdir, "baseline-ce", None, None,
                                    train_patches=patches["train"], val_patches=patches["val"])


@pytest.fixture(scope="module")
def ft_params(ce_params, patches, workdir):
    return fpr.train_fpr_experiment(fpr_test_config(), workdir, "baseline-beta-finetune", None,
                                    None, train_patches=patches["train"],
                                    val_patches=patches["val"])


def test_seg_pretraining_loss_falls(seg_params, workdir):
    _falls(_losses(workdir, "fpr_seg"))
    assert "seg_head" in seg_params


def test_baseline_ce_from_seg_loss_falls_and_evaluates(ce_params, seg_params, patches, workdir):
    _falls(_losses(workdir, "fpr_baseline-ce"))
    assert (np.asarray(ce_params["stem"]["kernel"]).shape  # from fpr_seg's encoder
            == np.asarray(seg_params["stem"]["kernel"]).shape)
    r = fpr.evaluate_fpr(ce_params, fpr_test_config(), patches["val"], head="ce")
    assert 0.0 <= r["auc"] <= 1.0 and np.isfinite(r["loss"])
    assert r["n_pos"] == int(patches["val"]["y"].sum())
    assert os.path.isdir(checkpoint.model_dir(workdir, "fpr_baseline-ce") + "/best")


def test_finetune_initialises_from_baseline_ce(ft_params, ce_params, workdir):
    _falls(_losses(workdir, "fpr_baseline-beta-finetune"))
    params, info = fpr.init_params(fpr_test_config(), workdir, "baseline-beta-finetune", 5)
    assert info["init_from"] == "fpr_baseline-ce"
    assert "cls_out/kernel" in info["fresh"]  # CE (.., 1) -> Beta (.., 2) head
    assert "stem/kernel" in info["copied"] and "cls_hidden/kernel" in info["copied"]
    np.testing.assert_array_equal(params["stem"]["kernel"], ce_params["stem"]["kernel"])
    np.testing.assert_array_equal(params["cls_hidden"]["kernel"],
                                  ce_params["cls_hidden"]["kernel"])
    assert np.asarray(params["cls_out"]["kernel"]).shape[-1] == 2
    assert np.asarray(ft_params["cls_out"]["kernel"]).shape[-1] == 2


def test_missing_init_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="fpr_seg"):
        fpr.init_params(fpr_test_config(), str(tmp_path), "baseline-beta", 0)


def _generator(c):
    from nodulejax.models.build import vae_model
    from nodulejax.models.classifier import GenHandle
    from nodulejax.train import synth

    tx = __import__("optax").adam(1e-3)
    st = synth.init_synth_state(c, jax.random.key(0, impl="rbg"), tx, tx)
    return GenHandle(vae_model(c), {"params": st["params"]["vae"]})


def test_augmented_from_pool(ft_params, patches, workdir, tmp_path):
    c = fpr_test_config()
    p = c.fpr.patch_size
    rng = np.random.default_rng(0)
    pool = str(tmp_path / "pool")
    for kind in ("syn_pgd", "perturb", "noise"):
        write_shard(shard_path(pool, kind, 0),
                    {"x": rng.uniform(0, 1, (3, p, p, p)).astype(np.float16)})
    params = fpr.train_fpr_experiment(c, workdir, "beta+perturb+syn", None, None, pool_dir=pool,
                                      train_patches=patches["train"],
                                      val_patches=patches["val"])
    ls = _losses(workdir, "fpr_beta+perturb+syn")
    assert len(ls) == c.fpr.finetune_steps and np.all(np.isfinite(ls))
    assert np.asarray(params["cls_out"]["kernel"]).shape[-1] == 2


def test_augmented_inloop(ft_params, scans, patches, workdir):
    c = fpr_test_config()
    c.train.aug_source = "inloop"
    c.fpr.finetune_steps = 2
    wd = os.path.join(workdir, "inloop")
    os.makedirs(os.path.join(wd, "checkpoints"), exist_ok=True)
    src = checkpoint.model_dir(workdir, "fpr_baseline-beta-finetune")
    os.symlink(src, checkpoint.model_dir(wd, "fpr_baseline-beta-finetune"))
    # latent PGD (Eqs. 7-9) on the generator inside the jitted step, against the frozen
    # baseline; perturb / noise use the same make_inloop_augment path
    fpr.train_fpr_experiment(c, wd, "beta+syn", scans, None,
                             generator=_generator(c), train_patches=patches["train"],
                             val_patches=patches["val"])
    ls = _losses(wd, "fpr_beta+syn")
    assert len(ls) == 2 and np.all(np.isfinite(ls))
    # the in-step latent search is logged: the frozen target's mean score before / after it
    rows = [json.loads(line) for line in open(f"{wd}/logs/fpr_beta+syn/metrics.jsonl")]
    logged = [r for r in rows if "inloop/syn_pgd_after" in r]
    assert logged and all(0 <= r["inloop/syn_pgd_after"] <= 1 for r in logged)


def test_kl_anneal_only_while_the_beta_head_is_new():
    from configs import demo
    from nodulejax.experiments import row

    c = demo.get_config()  # kl_anneal_steps 100, steps 320, finetune_steps 60
    assert fpr.kl_anneal_steps_for(c, row("baseline-beta")[1], "fpr") == 100
    # fresh Beta head on a CE model: the ramp ends by mid-stage (weight 1 = the attacks')
    assert fpr.kl_anneal_steps_for(c, row("baseline-beta-finetune")[1], "fpr_finetune") == 30
    # initialised from a Beta model: weight 1 from the first step
    for r in ("beta+syn", "beta+perturb", "beta+poisson"):
        assert fpr.kl_anneal_steps_for(c, row(r)[1], "fpr_augmented") == 0
