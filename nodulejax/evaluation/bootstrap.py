"""The bootstrap: resampled FROC curves, resampled means, and paired model differences
(Table 3 over scans, Tables 4-6 over patches).

**The FROC resampling engine** (the CPM intervals of ``nodulejax.evaluation.froc``): scans
drawn with replacement (:func:`scan_draws`, as many as the seriesuids list), the whole FROC
recomputed per sample (:func:`bootstrap_sensitivity`). It is vectorised: the per-scan TP/FP
entries (:class:`nodulejax.evaluation.froc.FrocEntries`) are sorted by probability once
(:func:`sorted_entries`); a sample is a vector of per-scan multiplicities
(:func:`multiplicities`, a bincount of the drawn indices), and its curve comes from cumulative
sums of the multiplicities gathered along the sorted entries (:func:`weighted_sensitivity`;
the counts -> curve arithmetic, :func:`curve_from_counts`, is the one
``froc.froc_curve`` uses for the unresampled curve).

**Paired differences.** A difference between two models is only meaningful against the
spread of the *difference*: both models are scored on the same test set, so their errors are
correlated and two separate intervals overstate the uncertainty. Here every model is evaluated
on the **same** resamples:

* **Table 3** (FROC / CPM, Section 5.2): one draw of the scans with replacement
  (:func:`scan_draws`) is shared by every model; each model's FROC curve is recomputed on it
  (:func:`weighted_sensitivity`, vectorised over resamples) -> sensitivity at the 7 FP rates
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

Intervals are the official LUNA16 order statistic (:func:`order_stat_ci`, 95%:
``sorted[floor(0.025 N)], sorted[floor(0.975 N)]``). All draws come from
``np.random.default_rng(seed)``: same seed, same result.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

from nodulejax.errors import ResultsError
from nodulejax.runtime.files import atomic_savez

__all__ = ["CONFIDENCE", "curve_from_counts", "sorted_entries", "scan_draws", "multiplicities",
           "bootstrap_sensitivity", "weighted_sensitivity", "order_stat_ci", "paired_froc",
           "paired_means", "independent_means", "difference_interval", "patch_draws",
           "read_scores", "write_scores", "interval"]

CONFIDENCE = 0.95


# ------------------------------------------------------------------- the FROC resampling engine
def curve_from_counts(cum_tp, cum_fp, n_nodules, n_scans):
    """FPs/scan and sensitivity of curve points from cumulative counts (..., P) that include
    the origin point. fps = cum_fp / n_scans (the official ``fpr * n_fp / n_scans`` without
    its rounding: exact ratios decide ties at the FP rates), except the official no-FP border
    case (no FP at all -> every fps is 0); sens = cum_tp / n_nodules (0 if no nodule)."""
    n_fp = cum_fp[..., -1:]
    n_nod = np.asarray(n_nodules, np.float64)
    if n_nod.ndim:
        n_nod = n_nod[:, None]
    fps = np.where(n_fp > 0, cum_fp / float(n_scans), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = np.where(n_nod > 0, cum_tp / np.maximum(n_nod, 1.0), 0.0)
    return fps, sens


def sorted_entries(entries):
    """FROC entries sorted by falling probability: ``(order, sorted scores, ends)``, ``ends``
    the last index of each run of equal probabilities (one curve point per threshold)."""
    order = np.argsort(-entries.score, kind="stable")
    score = entries.score[order]
    # last index of each run of equal probabilities (one curve point per distinct threshold)
    ends = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1] if len(score) else np.zeros(0, int)
    return order, score, ends


def _interp_rows(cum_fp, fps, sens, targets, n_scans):
    """``np.interp(targets, fps[i], sens[i])`` for every row i at once, with the exact
    integer test ``cum_fp <= targets * n_scans`` locating the bracketing points (rows are
    non-decreasing in ``cum_fp``; at a repeated FP rate the last point counts, as np.interp)."""
    nb, p = cum_fp.shape
    q = np.floor(np.asarray(targets) * n_scans + 1e-9).astype(np.int64)  # FP-count limits
    big = int(max(cum_fp.max(initial=0), q.max(initial=0))) + 2
    off = np.arange(nb, dtype=np.int64)[:, None] * big
    keys = (cum_fp.astype(np.int64) + off).ravel()
    j = np.searchsorted(keys, (q[None, :] + off).ravel(), side="right").reshape(nb, -1) - 1
    last = (j - off // big * p) == p - 1
    jn = np.where(last, j, j + 1)
    f, s = fps.ravel(), sens.ravel()
    f0, f1, s0, s1 = f[j], f[jn], s[j], s[jn]
    with np.errstate(divide="ignore", invalid="ignore"):
        val = s0 + (s1 - s0) * (np.asarray(targets)[None, :] - f0) / (f1 - f0)
    return np.where(last | (f1 == f0), s0, val)


def _boot_chunk(w, code, ends, nodules, targets, n_scans):
    """Curves of the samples ``w`` (nb, S) multiplicities over the first ``ends[-1] + 1``
    sorted entries; returns (sens at targets (nb, K), cum_fp at the last point (nb,))."""
    nb = w.shape[0]
    w64 = w.astype(np.int64)
    table = np.concatenate([w64, w64 << 32], axis=1)  # FP entries count low, TP entries high
    if len(ends):
        c = np.cumsum(table[:, code[: ends[-1] + 1]], axis=1)[:, ends]
    else:
        c = np.zeros((nb, 0), np.int64)
    c = np.concatenate([np.zeros((nb, 1), np.int64), c], axis=1)
    cum_fp, cum_tp = c & 0xFFFFFFFF, c >> 32
    fps, sens = curve_from_counts(
        cum_tp.astype(np.float64), cum_fp.astype(np.float64), nodules, n_scans
    )
    return _interp_rows(cum_fp, fps, sens, targets, n_scans), cum_fp[:, -1]


def scan_draws(n_scans: int, n_samples: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of the scans: ``(n_samples, n_scans)`` int64 indices drawn with
    replacement by ``np.random.default_rng(seed)`` (same seed, same draws)."""
    return np.random.default_rng(seed).integers(0, n_scans, size=(n_samples, n_scans))


def multiplicities(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each resample: draws (B, m) -> (B, n)."""
    b = draws.shape[0]
    flat = (draws + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def bootstrap_sensitivity(
    entries, targets, n_samples: int = 1000, seed: int = 0, chunk: int = 128
) -> np.ndarray:
    """Sensitivity at ``targets`` FPs/scan for ``n_samples`` bootstrap resamples of the scans
    (with replacement, as many as listed) -> (n_samples, len(targets)). Seeded with
    ``np.random.default_rng(seed)`` (:func:`scan_draws`): same seed, same result."""
    w = multiplicities(scan_draws(entries.n_scans, n_samples, seed), entries.n_scans)
    return weighted_sensitivity(entries, w, targets, chunk)


def weighted_sensitivity(entries, w_all: np.ndarray, targets,
                         chunk: int = 128) -> np.ndarray:
    """Sensitivity at ``targets`` FPs/scan of the resamples given by scan multiplicities
    ``w_all`` (B, S) (:func:`multiplicities`) -> (B, len(targets)).

    Vectorised: the entries are sorted by probability once, and a sample's curve counts are
    cumulative sums of its multiplicities gathered along the sorted entries (TP and FP counts
    packed in one int64). Only the prefix of entries up to about twice the largest target's FP
    count is summed; a sample whose curve does not pass the largest target within it is redone
    in full."""
    targets = np.asarray(targets, np.float64)
    n_scans = entries.n_scans
    n_samples = w_all.shape[0]
    per_scan = np.bincount(entries.scan, minlength=n_scans)
    if per_scan.max(initial=0) * n_scans >= 2**31:
        raise ValueError("too many FROC entries per scan for the packed bootstrap counts")
    nodules = w_all @ entries.nodules_per_scan.astype(np.int64)  # (B,)
    order, _, ends = sorted_entries(entries)
    code = entries.scan[order] + n_scans * entries.is_tp[order]
    c_max = int(np.floor(targets.max(initial=0.0) * n_scans + 1e-9))
    unweighted_fp = np.cumsum(~entries.is_tp[order])[ends] if len(ends) else np.zeros(0)
    n_pref = min(int(np.searchsorted(unweighted_fp, 2 * c_max + 16)) + 1, len(ends))
    out = np.empty((n_samples, len(targets)))
    for b0 in range(0, n_samples, chunk):
        sl = slice(b0, min(b0 + chunk, n_samples))
        val, fp_end = _boot_chunk(w_all[sl], code, ends[:n_pref], nodules[sl], targets, n_scans)
        redo = fp_end <= c_max if n_pref < len(ends) else np.zeros(len(val), bool)
        if redo.any():
            idx = np.nonzero(redo)[0]
            val[idx], _ = _boot_chunk(
                w_all[sl][idx], code, ends, nodules[sl][idx], targets, n_scans
            )
        out[sl] = val
    return out


def order_stat_ci(samples: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """Official percentile interval along axis 0: sorted[floor(a N)], sorted[floor((1-a) N)]."""
    n = samples.shape[0]
    a = (1.0 - confidence) / 2.0
    srt = np.sort(samples, axis=0)
    lo = srt[min(int(math.floor(a * n)), n - 1)]
    hi = srt[min(int(math.floor((1.0 - a) * n)), n - 1)]
    return np.stack([lo, hi], axis=-1)


# ------------------------------------------------------------------- paired model differences


def patch_draws(n: int, n_samples: int, seed) -> np.ndarray:
    """Bootstrap resamples of ``n`` patches: (n_samples, n) indices (with replacement)."""
    return scan_draws(n, n_samples, seed)


def paired_froc(entries: Mapping, targets, n_samples: int,
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


def difference_interval(a, b, n_samples: int, seed) -> list[float]:
    """95% bootstrap interval ``[lo, hi]`` of ``mean(a) - mean(b)`` for two unaligned score
    arrays (:func:`independent_means`, then :func:`interval`)."""
    sa, sb = independent_means(a, b, n_samples, seed)
    return interval(sa - sb)


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
