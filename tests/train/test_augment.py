"""nodulejax.train.augment: the five sampling groups of Section 3.3 and their sources (pool or
in-loop), with the paper's ratios."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.adversarial.noise import poisson_icdf
from nodulejax.adversarial.pool.store import shard_path, write_manifest, write_shard
from nodulejax.data.patches import random_flip_rot
from nodulejax.data.records import ConcatRecords, Subset
from nodulejax.errors import ConfigError
from nodulejax.train import augment as aug
from nodulejax.train.augment import GroupSource
from nodulejax.train.sampler import BalancedSampler
from tests.train.helpers import fpr_test_config


def test_group_ratios_give_unused_shares_to_real_patches():
    c = fpr_test_config()
    r = {"syn": "pgd", "perturb": True, "poisson": False}
    assert aug.group_ratios(c, r) == pytest.approx([0.25, 0.125, 0.125, 0.25, 0.25])
    r = {"syn": "pgd", "perturb": False, "poisson": False}
    assert aug.group_ratios(c, r) == pytest.approx([0.375, 0.125, 0.0, 0.5, 0.0])
    r = {"syn": "none", "perturb": False, "poisson": True}
    assert aug.group_ratios(c, r) == pytest.approx([0.375, 0.0, 0.125, 0.25, 0.25])
    r = {"syn": "none", "perturb": False, "poisson": False}
    assert aug.group_ratios(c, r) == pytest.approx([0.5, 0, 0, 0.5, 0])
    c.train.syn = "bogus"
    with pytest.raises(ConfigError, match="train.syn"):
        aug.group_ratios(c)

def test_sampling_ratios_hold_in_every_batch(tmp_path):
    """Pool patches tagged by value: every batch of 16 has 4/2/2/4/4 real-pos/syn/perturbed/
    real-neg/noise patches with the right labels (paper Section 3.3 ratios)."""
    c = fpr_test_config()
    c.fpr.batch_size = 16
    p = 4
    c.fpr.patch_size = p  # pool patches must be exactly the FPR patch size (no crop)
    real = {"x": np.concatenate([np.full((5, p, p, p), 0.1), np.full((7, p, p, p), 0.4)]),
            "y": np.array([1] * 5 + [0] * 7)}
    for kind, v in (("syn_pgd", 0.2), ("perturb", 0.3), ("noise", 0.5)):
        write_shard(shard_path(str(tmp_path), kind, 0),
                    {"x": np.full((3, p, p, p), v, np.float16), "item": np.arange(3)})
    row = {"syn": "pgd", "perturb": True, "poisson": False}
    src = aug.build_sources(c, row, real, pool_dir=str(tmp_path))
    sampler = BalancedSampler([s.size for s in src], aug.group_ratios(c, row), 16, 0)
    for step in range(7):
        b = aug.gather_batch(src, sampler.batch(step), augment=True, patch_size=p)
        vals = np.round(b["x"][:, 0, 0, 0], 1)
        for v, n, label in ((0.1, 4, 1), (0.2, 2, 1), (0.3, 2, 1), (0.4, 4, 0), (0.5, 4, 0)):
            assert np.sum(np.isclose(vals, v, atol=1e-3)) == n, (step, v, vals)
            assert np.all(b["y"][np.isclose(vals, v, atol=1e-3)] == label)
        assert np.all(b["kind"] == aug.PLAIN)
    c.train.aug_source = "inloop"
    with pytest.raises(ConfigError, match="scans"):
        aug.build_sources(c, row, real)

def test_poisson_augment_only_touches_poisson_slots():
    c = fpr_test_config()
    f = aug.make_inloop_augment(c, None, head="beta", counts={aug.POISSON: 2})
    x = jnp.full((4, 4, 4, 4, 1), 0.5)
    kind = jnp.array([aug.PLAIN, aug.POISSON, aug.PLAIN, aug.POISSON])
    out, attacked = jax.jit(f)(x, kind, jax.random.key(0), None, None, 1.0)
    out = np.asarray(out)
    assert attacked == {}  # Poisson noise is no attack: nothing to report
    np.testing.assert_array_equal(out[[0, 2]], 0.5)
    assert not np.allclose(out[[1, 3]], 0.5)
    assert out.min() >= 0 and out.max() <= 1
    # Poisson(0.5 s) / s has mean 0.5
    assert abs(out[[1, 3]].mean() - 0.5) < 0.15
    for lam in (0.0, 0.7, 40.0):  # the sampler: mean = variance = lam
        s = np.asarray(poisson_icdf(jax.random.key(1), jnp.full((20000,), lam), 130))
        assert abs(s.mean() - lam) < 0.05 * lam + 0.02 and abs(s.var() - lam) < 0.1 * lam + 0.02


def _gather_batch_in_memory(sources, idx, *, augment, patch_size):
    """``gather_batch`` as it was with every patch in memory (one row at a time): the
    reference the on-disk batches must equal bit for bit."""
    b = len(idx.group)
    x = np.zeros((b,) + (patch_size,) * 3, np.float32)
    y, kind = np.zeros(b, np.int32), np.zeros(b, np.int32)
    for i in range(b):
        s = sources[int(idx.group[i])]
        y[i], kind[i] = s.label, s.kind
        if s.x is not None:
            p = s.x[int(idx.index[i])]
            rng = np.random.default_rng(int(idx.seed[i]))
            extra = p.shape[0] - patch_size
            geo = augment and s.geometric
            if extra > 0:
                o = rng.integers(0, extra + 1, 3) if geo else np.full(3, extra // 2)
                p = p[o[0]:o[0] + patch_size, o[1]:o[1] + patch_size, o[2]:o[2] + patch_size]
            x[i] = random_flip_rot(p, rng) if geo else p
    return {"x": x, "y": y, "kind": kind}


def test_batches_from_disk_equal_the_in_memory_batches_bit_for_bit(tmp_path):
    """beta+perturb+syn with flips and crops on: the batches of ``fine_tune_data`` over the
    patch set on disk and the pool read by row equal those of the in-memory set and the
    concatenated pool gathered one row at a time (the code before both were on disk)."""
    from nodulejax.train.fpr import fine_tune_data, train_patch_set
    from tests.data.test_patchsets_on_disk import random_scans

    c = fpr_test_config()
    c.fpr.augment, c.fpr.jitter_vox, c.fpr.batch_size = True, 2, 16
    p = int(c.fpr.patch_size)
    scans = random_scans(shape=(30, 32, 34))
    pool = str(tmp_path / "pool")
    rng = np.random.default_rng(0)
    for kind in ("syn_pgd", "perturb", "noise"):
        for s in range(3):
            write_shard(shard_path(pool, kind, s), {
                "x": rng.random((3 + s, p, p, p)).astype(np.float16), "item": np.arange(3 + s)})
    write_manifest(pool, {"done": {k: [0, 1, 2] for k in ("syn_pgd", "perturb", "noise")},
                          "complete": True})
    disk = train_patch_set(c, scans, str(tmp_path / "run"))
    assert not isinstance(disk["x"], np.ndarray)
    on_disk = fine_tune_data(c, "beta+perturb+syn", disk, pool_dir=pool)
    in_memory = fine_tune_data(c, "beta+perturb+syn", train_patch_set(c, scans), pool_dir=pool)
    # the sources as they were: real positives / negatives copied out, pool kinds concatenated
    before = [GroupSource(s.name, None if s.x is None else np.asarray(s.x), s.label, s.kind,
                          s.size, geometric=s.geometric) for s in on_disk.sources]
    assert [type(s.x) for s in on_disk.sources[:4]] == [Subset, ConcatRecords, ConcatRecords,
                                                        Subset]
    for step in range(8):
        idx = on_disk.sampler.batch(step)
        assert idx.index.tobytes() == in_memory.sampler.batch(step).index.tobytes()
        a, b = on_disk.batch(step), in_memory.batch(step)
        ref = _gather_batch_in_memory(before, idx, augment=True, patch_size=p)
        for k in ("x", "y", "kind"):
            assert a[k].tobytes() == b[k].tobytes() == ref[k].tobytes(), (step, k)
