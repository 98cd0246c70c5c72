"""Deterministic, resumable batch sampling and a host-side prefetcher.

Every batch is a pure function of ``(seed, i)``: batch ``i`` draws its example indices from
per-epoch permutations ``np.random.default_rng([seed, group, epoch])`` and its augmentation
seeds from ``np.random.default_rng([seed, AUG, i])``. Nothing depends on how many batches
were drawn before, so a run resumed at step ``i`` replays exactly the batches the killed run
would have seen; the data-iterator position stored in a checkpoint is just ``i``.

``BalancedSampler`` mixes several index groups with fixed ratios, e.g. the FPR baseline's
50/50 positives/negatives (Section 3.1) or the augmented fine-tuning's positives 50% real /
25% synthetic / 25% adversarial and negatives 50% real / 50% adversarial (Section 3.3),
flattened to group ratios (0.25, 0.125, 0.125, 0.25, 0.25). Slots are assigned to groups by
smooth weighted round-robin over a cycle of ``L`` batches, ``L`` the smallest number of
batches in which every ``ratio * batch_size * L`` is a whole number (capped; then rounded),
so the ratios hold exactly over each cycle and within +-1 example in every batch. With the
paper's batch 16 every batch has exactly 4/2/2/4/4 examples.

``Prefetcher`` runs ``fn(i)`` for ``i = start, start+1, ...`` on background threads,
at most ``depth`` batches ahead, yields results in order, re-raises a worker's exception in
the consumer, and shuts down cleanly on ``close()`` (or leaving a ``with`` block). ``depth=0``
turns it off (``fn`` runs inline), which is how steps/s are compared with and without it.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from nodulejax.errors import ConfigError
from nodulejax.runtime.keys import STREAMS

_AUG = STREAMS["train/augment_seeds"]  # stream tag for augmentation seeds
_MAX_CYCLE = 256


@dataclasses.dataclass(frozen=True)
class BatchIndices:
    """What batch ``step`` contains.

    group: (B,) int32, which index group each example comes from (0 for ``IndexSampler``).
    index: (B,) int64, the example's index within its group.
    seed: (B,) uint32, a per-example augmentation seed (flips, rotations, noise draws).
    """

    step: int
    group: np.ndarray
    index: np.ndarray
    seed: np.ndarray

    def take(self, process_index: int, process_count: int) -> BatchIndices:
        """This process's contiguous share of the global batch (multi-host data loading)."""
        b = len(self.index)
        if b % process_count:
            raise ConfigError(f"batch size {b} is not divisible by process_count {process_count}")
        s = slice(process_index * b // process_count, (process_index + 1) * b // process_count)
        return BatchIndices(self.step, self.group[s], self.index[s], self.seed[s])


def epoch_permutation(seed: int, group: int, epoch: int, n: int) -> np.ndarray:
    """The order of group ``group``'s ``n`` examples in epoch ``epoch`` (int64)."""
    return np.random.default_rng([seed, group, epoch]).permutation(n)


def _stream(seed: int, group: int, n: int, positions: np.ndarray, shuffle: bool) -> np.ndarray:
    """Index of the example at each stream position (position p is epoch p // n, slot p % n)."""
    out = np.empty(len(positions), np.int64)
    epochs = positions // n
    for e in np.unique(epochs):
        sel = epochs == e
        slots = positions[sel] % n
        out[sel] = epoch_permutation(seed, group, int(e), n)[slots] if shuffle else slots
    return out


def aug_seeds(seed: int, step: int, batch_size: int) -> np.ndarray:
    """Per-example augmentation seeds of batch ``step``: (B,) uint32, pure in (seed, step)."""
    return np.random.default_rng([seed, _AUG, step]).integers(0, 2**32, batch_size, np.uint32)


class IndexSampler:
    """Plain epoch-wise shuffled sampling of ``n`` examples; batches span epoch boundaries.

    ``batch(i)``: example positions ``i*B .. i*B+B-1`` of the endless stream of epochs.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True):
        if n < 1 or batch_size < 1:
            raise ConfigError(f"IndexSampler needs n >= 1 and batch_size >= 1 (n={n}, "
                              f"batch_size={batch_size})")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle

    def batch(self, step: int) -> BatchIndices:
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        idx = _stream(self.seed, 0, self.n, pos, self.shuffle)
        return BatchIndices(step, np.zeros(self.batch_size, np.int32), idx,
                            aug_seeds(self.seed, step, self.batch_size))

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.n


def _cycle_counts(ratios: np.ndarray, batch_size: int) -> tuple[int, np.ndarray]:
    """(L, per-group totals over L batches) with totals/(L*B) == ratios when achievable."""
    for cycle in range(1, _MAX_CYCLE + 1):
        want = ratios * batch_size * cycle
        if np.allclose(want, np.round(want), atol=1e-6):
            return cycle, np.round(want).astype(np.int64)
    cycle = _MAX_CYCLE  # irrational-ish ratios: largest-remainder rounding over the cycle
    want = ratios * batch_size * cycle
    tot = np.floor(want).astype(np.int64)
    rest = batch_size * cycle - tot.sum()
    tot[np.argsort(-(want - tot), kind="stable")[:rest]] += 1
    return cycle, tot


def _swrr(totals: np.ndarray) -> np.ndarray:
    """Smooth weighted round-robin: a slot->group sequence with exactly ``totals`` per group."""
    n = int(totals.sum())
    current = np.zeros(len(totals), np.int64)
    seq = np.empty(n, np.int32)
    for s in range(n):
        current += totals
        g = int(np.argmax(current))  # ties -> lowest group index
        current[g] -= n
        seq[s] = g
    return seq


class BalancedSampler:
    """Fixed-ratio sampling from several index groups (each with its own epoch shuffles).

    Args:
      group_sizes: number of examples in each group (e.g. [n_pos_real, n_pos_syn, ...]).
      ratios: fraction of every batch drawn from each group (normalised; zeros allowed).
      batch_size: global batch size B.
      seed: the run seed.
    """

    def __init__(self, group_sizes: Sequence[int], ratios: Sequence[float], batch_size: int,
                 seed: int, shuffle: bool = True):
        sizes = np.asarray(group_sizes, np.int64)
        r = np.asarray(ratios, np.float64)
        if sizes.shape != r.shape or sizes.ndim != 1 or len(sizes) == 0:
            raise ConfigError(f"group_sizes {list(sizes)} and ratios {list(r)} must be "
                              "non-empty and of equal length")
        if (r < 0).any() or r.sum() <= 0:
            raise ConfigError(f"sampling ratios {list(r)} must be >= 0 with a positive sum")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        empty = [g for g in range(len(r)) if r[g] > 0 and sizes[g] == 0]
        if empty:
            raise ConfigError(f"sampling groups {empty} have ratio > 0 but no examples "
                              f"(group_sizes={list(sizes)}, ratios={list(r)})")
        self.sizes, self.ratios = sizes, r / r.sum()
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.cycle, totals = _cycle_counts(self.ratios, batch_size)
        self._slots = _swrr(totals)  # (L*B,) group of every slot in a cycle
        self._totals = totals
        # prefix[g, s] = number of group-g slots among the first s slots of a cycle
        onehot = self._slots[None, :] == np.arange(len(r))[:, None]
        self._prefix = np.concatenate([np.zeros((len(r), 1), np.int64),
                                       np.cumsum(onehot, axis=1)], axis=1)

    def counts(self, step: int) -> np.ndarray:
        """(G,) number of examples batch ``step`` takes from each group."""
        return np.bincount(self.batch(step).group, minlength=len(self.sizes))

    def batch(self, step: int) -> BatchIndices:
        b = self.batch_size
        c, off = divmod(step, self.cycle)
        s0 = off * b
        group = self._slots[s0:s0 + b]
        index = np.empty(b, np.int64)
        for g in np.unique(group):
            sel = group == g
            before = c * self._totals[g] + self._prefix[g, s0]  # group-g draws before this batch
            pos = before + np.arange(int(sel.sum()), dtype=np.int64)
            index[sel] = _stream(self.seed, int(g), int(self.sizes[g]), pos, self.shuffle)
        return BatchIndices(step, group.astype(np.int32), index, aug_seeds(self.seed, step, b))


def nested_ratios(top: Sequence[float], *parts: Sequence[float]) -> list[float]:
    """Flatten two-level ratios: ``nested_ratios((.5, .5), (.5, .25, .25), (.5, .5))`` ->
    ``[.25, .125, .125, .25, .25]`` (positives real/syn/adv, negatives real/adv)."""
    if len(top) != len(parts):
        raise ConfigError(f"{len(top)} top-level ratios but {len(parts)} sub-ratio lists")
    out = []
    for t, p in zip(top, parts, strict=True):
        s = float(sum(p))
        if s <= 0:
            raise ConfigError(f"sub-ratios {list(p)} must have a positive sum")
        out += [t * x / s for x in p]
    return out


class Prefetcher:
    """Iterate ``fn(start), fn(start+1), ...`` (up to ``stop``) computed ahead on threads.

    Args:
      fn: step -> batch (any object; e.g. numpy arrays, or arrays already device_put).
      start, stop: the step range (``stop=None``: endless).
      depth: batches in flight ahead of the consumer (0: no prefetch, ``fn`` runs inline).
      num_workers: threads; results are yielded in step order whatever finishes first.
    """

    def __init__(self, fn: Callable[[int], Any], start: int = 0, stop: int | None = None,
                 depth: int = 2, num_workers: int = 1):
        if depth < 0 or num_workers < 1:
            raise ConfigError(f"prefetch depth must be >= 0 and num_workers >= 1 "
                              f"(depth={depth}, num_workers={num_workers})")
        self.fn, self.next_step, self.stop = fn, start, stop
        self.depth = depth
        self._submitted = start
        self._pending: collections.deque[cf.Future] = collections.deque()
        self._pool = (cf.ThreadPoolExecutor(num_workers, thread_name_prefix="prefetch")
                      if depth > 0 else None)
        self._closed = False

    def _fill(self):
        while (len(self._pending) < self.depth
               and (self.stop is None or self._submitted < self.stop)):
            self._pending.append(self._pool.submit(self.fn, self._submitted))
            self._submitted += 1

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        if self.stop is not None and self.next_step >= self.stop:
            raise StopIteration
        if self._pool is None:
            out = self.fn(self.next_step)
        else:
            self._fill()
            fut = self._pending.popleft()
            try:
                out = fut.result()  # re-raises the worker's exception here
            except BaseException:
                self.close()
                raise
            self._fill()
        self.next_step += 1
        return out

    def close(self) -> None:
        """Cancel queued work and join the threads (waits only for batches being built)."""
        if self._closed:
            return
        self._closed = True
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


__all__ = ["BatchIndices", "IndexSampler", "BalancedSampler", "Prefetcher", "aug_seeds",
           "epoch_permutation", "nested_ratios"]
