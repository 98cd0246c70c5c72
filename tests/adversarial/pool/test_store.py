"""nodulejax.adversarial.pool.store: shards and manifest written atomically, read in order."""

import numpy as np
import pytest

from nodulejax.adversarial.pool import store
from nodulejax.errors import PoolError


def test_shards_round_trip_through_the_manifest(tmp_path):
    pool = str(tmp_path / "pool")
    for s in (1, 0):  # written out of order, read in shard order
        x = np.full((2, 4, 4, 4), s, np.float16)
        store.write_shard(store.shard_path(pool, "noise", s),
                          {"x": x, "item": np.arange(2) + 2 * s})
    store.write_manifest(pool, {"done": {"noise": [0, 1]}, "complete": True})
    x, meta = store.PoolReader(pool).arrays("noise")
    assert x.shape == (4, 4, 4, 4) and x[:2].max() == 0 and x[2:].min() == 1
    assert meta["item"].tolist() == [0, 1, 2, 3]
    assert store.PoolReader(pool).kinds() == ["noise"]
    assert sorted(p.name for p in (tmp_path / "pool" / "noise").iterdir()) == [
        "shard_00000.npz", "shard_00001.npz"]  # no temp files left


def test_unfinished_missing_and_unknown_kinds_are_pool_errors(tmp_path):
    pool = str(tmp_path / "p")
    store.write_manifest(pool, {"done": {"noise": []}, "complete": False})
    with pytest.raises(PoolError, match="unfinished"):
        store.PoolReader(pool)
    r = store.PoolReader(pool, require_complete=False)
    with pytest.raises(PoolError, match="no shards"):
        r.arrays("noise")
    with pytest.raises(PoolError, match="expected one of"):
        r.arrays("nodules")
    with pytest.raises(PoolError, match="does not exist"):
        store.PoolReader(str(tmp_path / "nowhere"))


def _old_arrays(pool, kind, shards):
    """What ``PoolReader.arrays`` returned before it read by row: every shard loaded and
    concatenated in memory."""
    xs, metas = [], {}
    for s in shards:
        with np.load(store.shard_path(pool, kind, s)) as z:
            xs.append(z["x"].astype(np.float16))
            for k in z.files:
                if k != "x" and z[k].ndim >= 1 and len(z[k]) == len(z["x"]):
                    metas.setdefault(k, []).append(z[k])
    return np.concatenate(xs), {k: np.concatenate(v) for k, v in metas.items()}


def test_lazy_pool_patches_equal_the_shards_concatenated_bit_for_bit(tmp_path):
    pool = str(tmp_path / "pool")
    rng = np.random.default_rng(0)
    sizes = (4, 1, 7, 3)
    for s, n in enumerate(sizes):
        store.write_shard(store.shard_path(pool, "perturb", s), {
            "x": rng.random((n, 6, 6, 6)).astype(np.float16), "item": np.arange(n) + 10 * s,
            "key": rng.integers(0, 2 ** 31, (n, 2)).astype(np.uint32),
            "prob_after": rng.random(n).astype(np.float32), "eps": np.float32(0.1)})
    store.write_manifest(pool, {"done": {"perturb": [0, 1, 2, 3]}, "complete": True})
    x, meta = store.PoolReader(pool).arrays("perturb")
    ref_x, ref_meta = _old_arrays(pool, "perturb", range(4))
    assert not isinstance(x, np.ndarray) and x.shape == ref_x.shape and x.dtype == np.float16
    assert np.asarray(x).tobytes() == ref_x.tobytes()
    for key in (0, 4, 5, -1, slice(3, 9), rng.integers(0, len(ref_x), 50)):  # across shards
        assert x[key].tobytes() == ref_x[key].tobytes(), key
    assert sorted(meta) == sorted(ref_meta) == ["item", "key", "prob_after"]
    for k in meta:
        assert meta[k].tobytes() == ref_meta[k].tobytes()


def test_a_truncated_or_compressed_shard_is_a_pool_error(tmp_path):
    pool = str(tmp_path / "pool")
    path = store.shard_path(pool, "noise", 0)
    store.write_shard(path, {"x": np.zeros((3, 4, 4, 4), np.float16), "item": np.arange(3)})
    data = open(path, "rb").read()
    open(path, "wb").write(data[:300])
    with pytest.raises(PoolError, match="shard_00000.npz"):
        store.PoolReader(pool).arrays("noise")
    np.savez_compressed(path, x=np.zeros((3, 4, 4, 4), np.float16))
    with pytest.raises(PoolError, match="compressed member"):
        store.PoolReader(pool).arrays("noise")
    np.savez(path, x=np.zeros((3, 4, 4, 4), np.float32))
    with pytest.raises(PoolError, match="float16"):
        store.PoolReader(pool).arrays("noise")
