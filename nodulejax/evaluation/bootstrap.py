"""Paired bootstrap of model differences: Table 3 over scans, Tables 4-6 over patches.

A difference between two models is only meaningful against the spread of the *difference*:
both models are scored on the same test set, so their errors are correlated and two separate
intervals overstate the uncertainty. Here every model is evaluated on the **same** resamples:

* **Table 3** (FROC / CPM, Section 5.2): one draw of the scans with replacement (as many as
  the seriesuids list, :func:`nodulejax.evaluation.froc.scan_draws`) is shared by every model;
  each model's FROC curve is recomputed on it (:func:`nodulejax.evaluation.froc.
  weighted_sensitivity`, vectorised over resamples) -> sensitivity at the 7 FP rates
  (B, 7) per model, from which any CPM-like statistic and its paired difference follow.
* **Tables 4-6** (mean FPR confidence, Section 5.3): patches aligned by index across models
  (the same patch i scored by each model) share one draw of patch indices; the resampled mean
  of each model is ``W @ scores / n`` with W the (B, n) multiplicities of the draw.
  Two columns that are not aligned (e.g. Table 4's random and PGD nodules, filtered
  separately) are resampled independently (:func:`independent_means`).

Per-patch scores are read from ``eval/stress/scores.npz`` (:func:`read_scores`; written by
:func:`write_scores`): one float
array (n,) per key ``"<table>/<model>/<column>"`` (``table4``, ``table5``, ``table6``,
``table5_whitebox``, ``table6_whitebox``; the model as in ``stress.json``, e.g.
``baseline-beta-finetune``; the column as in ``stress.json``, e.g. ``PGD noise``), arrays of one
table and column aligned by patch index across models.

Intervals are the official LUNA16 order statistic (:func:`nodulejax.evaluation.froc.
order_stat_ci`). All draws come from ``np.random.default_rng(seed)``: same seed, same result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from nodulejax.errors import ResultsError
from nodulejax.evaluation.froc import (
    FrocEntries,
    multiplicities,
    order_stat_ci,
    scan_draws,
    weighted_sensitivity,
)
from nodulejax.runtime.files import atomic_savez

__all__ = ["paired_froc", "paired_means", "independent_means", "patch_draws", "read_scores",
           "write_scores", "interval"]


def patch_draws(n: int, n_samples: int, seed) -> np.ndarray:
    """Bootstrap resamples of ``n`` patches: (n_samples, n) indices (with replacement)."""
    return scan_draws(n, n_samples, seed)


def paired_froc(entries: Mapping[str, FrocEntries], targets, n_samples: int,
                seed) -> dict[str, np.ndarray]:
    """Sensitivity at ``targets`` FPs/scan of every model on the same ``n_samples`` scan
    resamples -> ``{model: (n_samples, len(targets))}``. All models must list the same scans
    (same ``n_scans``; the annotations are shared, so ``nodules_per_scan`` must agree)."""
    if not entries:
        return {}
    names = list(entries)
    ref = entries[names[0]]
    for n in names[1:]:
        e = entries[n]
        if e.n_scans != ref.n_scans or not np.array_equal(e.nodules_per_scan,
                                                          ref.nodules_per_scan):
            raise ResultsError(f"paired FROC bootstrap: {n!r} and {names[0]!r} were evaluated "
                               f"on different scans or annotations ({e.n_scans} vs "
                               f"{ref.n_scans} scans)")
    w = multiplicities(scan_draws(ref.n_scans, n_samples, seed), ref.n_scans)
    return {n: weighted_sensitivity(entries[n], w, targets) for n in names}


def paired_means(scores: Mapping[str, np.ndarray], n_samples: int,
                 seed) -> dict[str, np.ndarray]:
    """Mean score of every model on the same ``n_samples`` patch resamples ->
    ``{model: (n_samples,)}``; arrays (n,) must be aligned by patch index (same n)."""
    if not scores:
        return {}
    arrs = {k: np.asarray(v, np.float64).reshape(-1) for k, v in scores.items()}
    sizes = {k: len(v) for k, v in arrs.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()):
        raise ResultsError(f"paired bootstrap: score arrays are not aligned by patch (sizes "
                           f"{sizes})")
    if n == 0:
        raise ResultsError(f"paired bootstrap: no patches in {list(arrs)}")
    w = multiplicities(patch_draws(n, n_samples, seed), n).astype(np.float64)
    return {k: w @ v / n for k, v in arrs.items()}


def independent_means(a, b, n_samples: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """Means of two unaligned score arrays, each resampled on its own (two-sample
    bootstrap; draws of ``a`` then of ``b`` from one generator) -> ((B,), (B,))."""
    a, b = (np.asarray(x, np.float64).reshape(-1) for x in (a, b))
    if len(a) == 0 or len(b) == 0:
        raise ResultsError(f"bootstrap: empty score array (sizes {len(a)}, {len(b)})")
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), size=(n_samples, len(a)))
    ib = rng.integers(0, len(b), size=(n_samples, len(b)))
    return a[ia].mean(1), b[ib].mean(1)


def interval(samples) -> list[float]:
    """95% bootstrap interval ``[lo, hi]`` of 1-D samples (official order statistic)."""
    lo, hi = order_stat_ci(np.asarray(samples, np.float64).reshape(-1, 1))[0]
    return [float(lo), float(hi)]


def read_scores(path: str | os.PathLike) -> dict[tuple[str, str, str], np.ndarray]:
    """``scores.npz`` -> ``{(table, model, column): scores (n,) float64}``. Raises
    :class:`ResultsError` naming the file and key on a key that is not ``table/model/column``
    or an array that is not 1-D finite."""
    path = os.fspath(path)
    out = {}
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot be read as .npz ({e})") from e
    with z:
        for key in z.files:
            parts = key.split("/")
            if len(parts) != 3 or not all(parts):
                raise ResultsError(f"{path}: key {key!r} is not 'table/model/column'")
            arr = np.asarray(z[key])
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number) or \
                    not np.isfinite(arr).all():
                raise ResultsError(f"{path}: {key!r} must be a 1-D finite float array (got "
                                   f"shape {arr.shape}, dtype {arr.dtype})")
            out[tuple(parts)] = arr.astype(np.float64)
    return out


def write_scores(path: str | os.PathLike, scores: Mapping[tuple[str, str, str], np.ndarray]
                 ) -> None:
    """Write ``{(table, model, column): scores (n,)}`` as ``scores.npz`` (atomically), the
    format :func:`read_scores` reads. Names may not contain "/"."""
    arrays = {}
    for key, v in scores.items():
        if len(key) != 3 or any(not k or "/" in k for k in key):
            raise ResultsError(f"{os.fspath(path)}: score key {key!r} must be three non-empty "
                               f"names without '/'")
        arrays["/".join(key)] = np.asarray(v, np.float64).reshape(-1)
    atomic_savez(path, **arrays)
