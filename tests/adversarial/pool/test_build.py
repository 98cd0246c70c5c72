"""nodulejax.adversarial.pool.build on a tiny phantom: resumable, deterministic, metadata,
config guard.

On the session fixture ``pool_setup`` (tests/conftest.py, tests/adversarial/pool/helpers.py):
the FPR is the real DenseUNet3D (configs/tiny.py sizes) briefly trained on the phantom's
patches and saved through the real checkpoint code; the generator is a small differentiable
blob decoder with the VAE.decode convention (the synthesizer's VAE belongs to another module;
a randomly initialised VAE does not produce nodule-like blobs above the fusion threshold).
The FPR gets only 30 full-batch steps (compilation on the shared 2-core CPU dominates), so its
scores are nearly constant; the direction checks compare means that PGD moves only slightly.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.adversarial.attacks import score_patches
from nodulejax.adversarial.pool import build as pool
from nodulejax.adversarial.pool import store
from nodulejax.errors import PoolError
from nodulejax.train import augment as aug
from nodulejax.train import fpr as fpr_train
from tests.adversarial.pool.helpers import tiny_config

pytestmark = pytest.mark.slow  # the pool set-up plus several pool builds: ~90 s on 2 cores

F16_SCORE_TOL = 2e-3  # |score(float16 patch) - score(float32 patch)| of the attacked FPR


@pytest.fixture(scope="session")
def scans(pool_setup):
    return pool_setup[3]


@pytest.fixture(scope="session")
def trained(pool_setup):
    return pool_setup[:3]


@pytest.fixture(scope="session")
def full_pool(trained, scans, tmp_path_factory):
    config, workdir, gen = trained
    out = str(tmp_path_factory.mktemp("pool_full"))
    pool.build_pool(config, workdir, scans, out_dir=out, generator=gen, progress=False)
    return out


def _all(pool_dir):
    r = store.PoolReader(pool_dir)
    return {k: r.arrays(k) for k in store.POOL_KINDS}


def test_interrupted_and_resumed_pool_equals_uninterrupted(trained, scans, full_pool, tmp_path):
    config, workdir, gen = trained
    out = str(tmp_path / "pool")
    seen = []

    def boom(kind, s):
        seen.append((kind, s))
        if len(seen) == 3:
            raise KeyboardInterrupt("injected kill after 3 shards")

    with pytest.raises(KeyboardInterrupt):
        pool.build_pool(config, workdir, scans, out_dir=out, generator=gen, progress=False,
                        on_shard=boom)
    man = store.read_manifest(out)
    assert not man["complete"] and sum(len(v) for v in man["done"].values()) == 3
    with pytest.raises(PoolError, match="unfinished"):
        store.PoolReader(out)
    # a stray temp file of a shard being written when the process died is ignored
    os.makedirs(os.path.join(out, "noise"), exist_ok=True)
    open(os.path.join(out, "noise", ".shard_00000.npz.tmp"), "wb").write(b"partial")
    resumed = []
    pool.build_pool(config, workdir, scans, out_dir=out, generator=gen, progress=False,
                    on_shard=lambda k, s: resumed.append((k, s)))
    assert not set(resumed) & set(seen)  # finished shards are not recomputed
    assert len(resumed) + len(seen) == sum(store.read_manifest(out)["shards"].values())
    a, b = _all(out), _all(full_pool)
    for kind in store.POOL_KINDS:
        np.testing.assert_array_equal(a[kind][0], b[kind][0])
        assert a[kind][1].keys() == b[kind][1].keys()
        for k in a[kind][1]:
            np.testing.assert_array_equal(a[kind][1][k], b[kind][1][k], err_msg=f"{kind}.{k}")
        # no duplicates, no gaps beyond the diameter filter
        items = a[kind][1]["item"]
        assert np.all(np.diff(items) > 0)
    # timing.json: the whole pool's sample count (a result), and what this call computed
    with open(os.path.join(out, "timing.json")) as f:
        timing = json.load(f)
    with open(os.path.join(full_pool, "timing.json")) as f:
        full = json.load(f)
    assert timing["samples"] == full["samples"] == full["samples_this_run"]
    assert 0 < timing["samples_this_run"] < timing["samples"]
    # a finished pool is not recomputed
    again = []
    pool.build_pool(config, workdir, scans, out_dir=out, generator=gen, progress=False,
                    on_shard=lambda k, s: again.append(k))
    assert again == []


def test_pool_metadata_consistent(trained, scans, full_pool):
    config, workdir, gen = trained
    fpr = pool.load_fpr(config, workdir, "fpr_baseline-beta-finetune")
    man = store.read_manifest(full_pool)
    n_pos = sum(len(s.nodules_zyx) for s in scans)
    assert man["items"] == {"syn_random": 4, "syn_pgd": 4, "perturb": n_pos, "noise": 6}
    uids = {s.uid: s for s in scans}
    p = int(config.fpr.patch_size)
    pos, pos_uid, _ = pool.positive_patches(scans, p)
    for kind in store.POOL_KINDS:
        x, meta = store.PoolReader(full_pool).arrays(kind)
        assert x.shape[1:] == (p, p, p) and x.dtype == np.float16
        assert len(x) > 0, kind
        x = np.asarray(x)  # read by row from the shards: all of this small pool
        for k, v in meta.items():
            assert len(v) == len(x), (kind, k)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert np.all((meta["prob_before"] >= 0) & (meta["prob_before"] <= 1))
        # prob_stored is the attacked FPR's score of the stored patch; prob_after the attack's
        # own, on its float32 output: they differ by the float16 rounding only
        rescored = score_patches(fpr, x.astype(np.float32), int(config.pgd.batch_size))
        np.testing.assert_allclose(rescored, meta["prob_stored"], atol=1e-5)
        np.testing.assert_allclose(rescored, meta["prob_after"], atol=F16_SCORE_TOL)
        keys = pool.item_keys(int(config.seed), pool.KIND_ID[kind], meta["item"])
        if kind.startswith("syn"):
            assert np.all(meta["diameter_mm"] >= config.synth.min_diameter_mm)
            for u, c in zip(meta["uid"], meta["center_zyx"], strict=False):
                assert uids[u].lung[tuple(c)]
                d = np.linalg.norm(uids[u].nodules_zyx - c, axis=1)
                assert np.all(d >= p / 4)
            # the key used is one of the item's max_tries derived keys
            tries = meta["tries"]
            derived = np.stack([np.asarray(jax.random.fold_in(k, t))
                                for k, t in zip(keys, tries, strict=True)])
            np.testing.assert_array_equal(meta["key"], derived)
        else:
            np.testing.assert_array_equal(meta["key"], keys)
        if kind == "syn_pgd":
            assert np.all(meta["attack"] == "latent_pgd") and np.all(meta["eps"] == 0.15)
            assert np.mean(meta["prob_after"]) < np.mean(meta["prob_before"])
        if kind == "syn_random":
            np.testing.assert_array_equal(meta["prob_before"], meta["prob_after"])
        if kind == "perturb":
            # each sample is its positive moved by at most eps (plus float16 rounding)
            np.testing.assert_array_equal(meta["uid"], pos_uid[meta["item"]])
            dev = np.abs(x.astype(np.float32) - pos[meta["item"]]).max()
            assert dev <= config.pgd.image_eps + 1e-3
        if kind == "noise":
            assert np.all(meta["uid"] == "") and np.all(meta["eps"] == config.pgd.noise_eps)


def test_changed_config_is_refused(trained, scans, full_pool):
    config, workdir, gen = trained
    c = tiny_config()
    c.pool.num_noise = 7
    with pytest.raises(PoolError, match="pool.num_noise"):
        pool.build_pool(c, workdir, scans, out_dir=full_pool, generator=gen, progress=False)
    c = tiny_config()
    c.pgd.noise_eps = 0.2
    with pytest.raises(PoolError, match="pgd.noise_eps"):
        pool.build_pool(c, workdir, scans, out_dir=full_pool, generator=gen, progress=False)
    # other weights for the attacked model are a different pool too
    with pytest.raises(PoolError, match="fpr_params"):
        pool.build_pool(config, workdir, scans, out_dir=full_pool, generator=gen,
                        fpr_model_name="fpr_beta+syn", progress=False)


def test_samples_do_not_depend_on_batching(trained, scans, full_pool):
    """An item computed alone (padded batch) equals the same item inside the full run."""
    config, workdir, gen = trained
    fpr = pool.load_fpr(config, workdir, "fpr_baseline-beta-finetune")
    p = int(config.fpr.patch_size)
    ctx = pool._Context(config, fpr, gen, pool.background_patches(scans, p, 1, int(config.seed)),
                        pool.positive_patches(scans, p))
    for kind in ("noise", "perturb", "syn_pgd"):
        x, meta = store.PoolReader(full_pool).arrays(kind)
        j = len(x) - 1
        r = pool._compute(kind, meta["item"][j:j + 1], ctx)
        np.testing.assert_allclose(r["x"][0].astype(np.float16).astype(np.float32),
                                   x[j].astype(np.float32), atol=1e-3)
        np.testing.assert_array_equal(r["key"][0], meta["key"][j])


# ------------------------------------------------------------------- attack -> batch -> loss
def _fine_tune(config, row, scans, pool_dir):
    """The real batches of ``row``'s fine-tune (``train.fpr.fine_tune_data``, the function
    ``train_fpr_experiment`` feeds its loss with), with the geometric augmentation on."""
    c = config.copy_and_resolve_references()
    c.fpr.augment = True
    c.fpr.jitter_vox = 2
    real = fpr_train.train_patch_set(c, scans)
    return fpr_train.fine_tune_data(c, row, real, train_scans=scans, pool_dir=pool_dir)


def test_pool_patches_reach_the_loss_as_the_attack_made_them(trained, scans, full_pool):
    """The invariant of ``train.augment``: for every pool example of real fine-tune batches
    (pool mode, flips and crops on for real patches), the attacked model scores the patch in
    the batch as the pool recorded (prob_stored; prob_after within float16 rounding), and the
    patch is the stored one bit for bit. Real patches still get their cube symmetries."""
    config, workdir, _ = trained
    fpr = pool.load_fpr(config, workdir, "fpr_baseline-beta-finetune")
    seen, flipped = {}, 0
    for row in ("beta+perturb+syn", "beta+syn (random)"):
        data = _fine_tune(config, row, scans, full_pool)
        for step in range(6):
            idx = data.sampler.batch(step)
            batch = data.batch(step)
            scores = score_patches(fpr, batch["x"], int(config.pgd.batch_size))
            for i, (g, j) in enumerate(zip(idx.group, idx.index, strict=True)):
                src = data.sources[int(g)]
                if src.pool_kind is None:  # a real patch, cut with a jitter margin
                    real, P = src.x[int(j)], batch["x"].shape[1]
                    m = (real.shape[0] - P) // 2
                    flipped += not np.array_equal(batch["x"][i], real[m:m + P, m:m + P, m:m + P])
                    continue
                seen[src.pool_kind] = seen.get(src.pool_kind, 0) + 1
                assert abs(scores[i] - src.meta["prob_stored"][int(j)]) < 1e-5, (
                    src.name, scores[i], src.meta["prob_stored"][int(j)])
                assert abs(scores[i] - src.meta["prob_after"][int(j)]) < F16_SCORE_TOL
                np.testing.assert_array_equal(batch["x"][i], src.x[int(j)].astype(np.float32))
                assert batch["y"][i] == src.label
    assert set(seen) == set(store.POOL_KINDS), seen
    assert flipped > 0  # the real patches keep the geometric augmentation


def test_inloop_attacks_move_the_frozen_targets_score_on_every_example(trained, scans):
    """In-loop mode: the host transforms the input, the step attacks it. On a real batch of
    beta+perturb+syn, every in-step attack moves the frozen target's score the intended way
    (perturbed positives and PGD-searched nodules down, PGD noise up), and the target scores
    the patch the loss receives as the attack recorded."""
    config, workdir, gen = trained
    fpr = pool.load_fpr(config, workdir, "fpr_baseline-beta-finetune")
    c = config.copy_and_resolve_references()
    c.train.aug_source = "inloop"
    data = _fine_tune(c, "beta+perturb+syn", scans, None)
    augment = aug.make_inloop_augment(c, fpr.model, head=fpr.head, counts=data.counts,
                                      generator=gen.model)
    run = jax.jit(augment)
    moved = {}
    for step in range(4):
        batch = data.batch(step)
        x = jnp.asarray(batch["x"])[..., None]
        out, attacked = run(x, jnp.asarray(batch["kind"]), jax.random.key(step),
                            fpr.variables, gen.variables, 1.0)
        scores = score_patches(fpr, np.asarray(out)[..., 0], int(c.pgd.batch_size))
        for name, r in attacked.items():
            ok = np.asarray(r["valid"])
            before, after = np.asarray(r["prob_before"])[ok], np.asarray(r["prob_after"])[ok]
            rows = np.asarray(r["index"])[ok]
            assert np.all(batch["kind"][rows] == {
                "perturb": aug.PERTURB, "noise": aug.NOISE, "syn_pgd": aug.SYN_PGD}[name])
            if name == "noise":
                assert np.all(after > before), (name, before, after)
            else:
                assert np.all(after < before), (name, before, after)
            np.testing.assert_allclose(scores[rows], after, atol=1e-5)
            moved[name] = moved.get(name, 0) + len(rows)
    assert all(moved.get(k, 0) > 0 for k in ("perturb", "noise", "syn_pgd")), moved
