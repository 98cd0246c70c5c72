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
