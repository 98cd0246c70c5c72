"""nodulejax.train.sampler: pure-in-step samplers and the prefetcher."""

import threading
import time

import numpy as np
import pytest

from nodulejax.errors import ConfigError
from nodulejax.train.sampler import BalancedSampler, IndexSampler, Prefetcher, nested_ratios


def test_index_sampler_is_pure_in_step_and_covers_each_epoch():
    s = IndexSampler(n=24, batch_size=8, seed=3)
    forward = [s.batch(i) for i in range(9)]
    fresh = IndexSampler(n=24, batch_size=8, seed=3)
    for i in (7, 2, 0, 8, 5):  # any order, any position, any instance
        b = fresh.batch(i)
        assert np.array_equal(b.index, forward[i].index)
        assert np.array_equal(b.seed, forward[i].seed)
    for e in range(3):  # each epoch is a permutation; epochs differ
        idx = np.concatenate([forward[3 * e + k].index for k in range(3)])
        assert sorted(idx) == list(range(24))
    assert not np.array_equal(forward[0].index, forward[3].index)
    assert not np.array_equal(IndexSampler(24, 8, seed=4).batch(0).index, forward[0].index)
    # batches straddling an epoch boundary
    s2 = IndexSampler(n=10, batch_size=4, seed=0)
    idx = np.concatenate([s2.batch(i).index for i in range(5)])
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:20]) == list(range(10))

def test_balanced_sampler_ratios_and_replay():
    ratios = nested_ratios((0.5, 0.5), (0.5, 0.25, 0.25), (0.5, 0.5))
    assert np.allclose(ratios, [0.25, 0.125, 0.125, 0.25, 0.25])
    sizes = [10, 30, 7, 50, 13]
    s = BalancedSampler(sizes, ratios, batch_size=16, seed=1)
    for i in range(20):  # the paper's batch: exact counts in every batch
        b = s.batch(i)
        assert np.bincount(b.group, minlength=5).tolist() == [4, 2, 2, 4, 4]
        assert all((b.index[b.group == g] < sizes[g]).all() for g in range(5))
    # within a group the draws walk through epoch permutations (group 0: 10 items, 4/batch)
    g0 = np.concatenate([s.batch(i).index[s.batch(i).group == 0] for i in range(5)])
    assert sorted(g0[:10]) == list(range(10)) and sorted(g0[10:20]) == list(range(10))
    # odd batch: ratios exact over a cycle, within +-1 in every batch
    s6 = BalancedSampler(sizes, ratios, batch_size=6, seed=1)
    counts = np.array([s6.counts(i) for i in range(4 * s6.cycle)])
    assert (np.abs(counts - 6 * np.asarray(ratios)) < 1 + 1e-9).all()
    assert np.allclose(counts.sum(0) / counts.sum(), ratios)
    # replay from any position with a new instance
    again = BalancedSampler(sizes, ratios, batch_size=6, seed=1)
    for i in (13, 0, 7):
        a, b = s6.batch(i), again.batch(i)
        assert np.array_equal(a.group, b.group) and np.array_equal(a.index, b.index)
    with pytest.raises(ConfigError, match="no examples"):
        BalancedSampler([10, 0], [0.5, 0.5], 4, 0)
    assert BalancedSampler([10, 0], [1.0, 0.0], 4, 0).counts(3).tolist() == [4, 0]
    b = s.batch(2)
    parts = [b.take(p, 4) for p in range(4)]
    assert np.array_equal(np.concatenate([p.index for p in parts]), b.index)

def test_prefetch_yields_the_same_batches_in_order():
    rng_sleep = np.random.default_rng(0).uniform(0, 0.01, 40)
    sampler = IndexSampler(n=50, batch_size=4, seed=2)

    def fn(i):
        time.sleep(rng_sleep[i])  # workers finish out of order
        return sampler.batch(i).index

    inline = list(Prefetcher(fn, start=5, stop=30, depth=0))
    with Prefetcher(fn, start=5, stop=30, depth=4, num_workers=3) as p:
        ahead = list(p)
    assert len(inline) == 25
    assert all(np.array_equal(a, b) for a, b in zip(inline, ahead, strict=True))

def test_prefetch_propagates_errors_and_shuts_down():
    before = {t.ident for t in threading.enumerate()}

    def fn(i):
        if i == 3:
            raise ValueError("bad scan 3")
        return i

    p = Prefetcher(fn, start=0, stop=None, depth=3, num_workers=2)
    got = [next(p), next(p), next(p)]
    with pytest.raises(ValueError, match="bad scan 3"):
        next(p)
    assert got == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(p)  # closed after the error
    p2 = Prefetcher(lambda i: i, start=0, stop=None, depth=5)
    assert next(p2) == 0
    p2.close()
    time.sleep(0.05)
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
            and t.name.startswith("prefetch")]
    assert not left
