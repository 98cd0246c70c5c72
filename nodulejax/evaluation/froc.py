"""LUNA16-exact FROC / CPM evaluation with bootstrap confidence intervals (paper Table 3).

Implements the rules of the official LUNA16 script ``noduleCADEvaluationLUNA16.py``
(Setio et al., 2017), which the paper's Table 3 numbers come from:

* a mark (CAD detection) hits a finding when its squared distance in mm is strictly below
  ``(d / 2) ** 2``; a diameter ``d < 0`` (unknown, ``annotations_excluded.csv``) means 10 mm;
* findings of the excluded file are irrelevant: a mark on one that hits no included nodule is
  neither a TP nor an FP (it is dropped);
* an included nodule is detected with the probability of its most probable hitting mark;
  further marks on it are dropped (not FPs); one mark may detect two nodules;
* at most 100 marks per scan: when a scan has more, only the marks *strictly above* the
  101st-highest probability are kept (so ties at that probability are all dropped);
* ``min_diameter_mm`` (paper Section 4: "We only considered the nodules with the diameters
  larger than 6mm"; 0 keeps all): included nodules below it join the excluded findings with
  their own diameter (:func:`irrelevant_below`), so a mark on one is neither TP nor FP;
* every scan of the seriesuids file counts (``n_scans``), marks or not; annotations of scans not
  listed are ignored; missed nodules stay in the denominator;
* FPs/scan at threshold t = FP marks with probability >= t / n_scans;
  sensitivity = detected nodules with probability >= t / all included nodules;
* the FROC curve has one point per distinct probability (plus the origin), as sklearn's
  ``roc_curve`` gives it; sensitivity at 1/8 .. 8 FPs/scan is ``np.interp`` over that curve
  (at an FP rate the curve reaches with several points, ``np.interp`` takes the last, i.e. the
  highest sensitivity); the CPM is their mean;
* FPs/scan of a curve point is computed as the exact ratio FP count / n_scans (the official
  ``fpr * n_fp / n_scans`` can land one ulp off an FP rate such as 111/888 = 1/8 and so pick
  the other side of a vertical step; exact ratios make that tie deterministic);
* a run with no FP mark at all: like the official script, every curve point gets FPs/scan 0,
  so ``np.interp`` returns the final sensitivity (detected / all nodules) at every FP rate;
* bootstrap: scans drawn with replacement (same count as the seriesuids file), the whole
  FROC recomputed per sample; the 95% interval is the official order statistic
  ``sorted[floor(0.025 N)], sorted[floor(0.975 N)]`` (the engine:
  :mod:`nodulejax.evaluation.bootstrap`).

Where the official script gives NaN or crashes we define: no detected nodule (including an
empty predictions file) -> sensitivity 0 everywhere, CPM 0; no included nodule -> sensitivity 0.

"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from absl import flags

from nodulejax.data import luna16
from nodulejax.data.luna16 import hit_matrix, hit_radius_sq
from nodulejax.errors import LUNA16FormatError
from nodulejax.evaluation.bootstrap import (
    bootstrap_sensitivity,
    curve_from_counts,
    order_stat_ci,
    sorted_entries,
)
from nodulejax.evaluation.plots import plot_froc
from nodulejax.evaluation.table3 import table3_header, table3_row
from nodulejax.runtime.cli import run_main
from nodulejax.runtime.files import atomic_write_json, atomic_write_text

__all__ = [
    "FPS",
    "MAX_MARKS",
    "FrocEntries",
    "match_marks",
    "irrelevant_below",
    "froc_curve",
    "sensitivity_at",
    "evaluate",
    "evaluate_files",
    "read_files",
    "write_outputs",
    "main",
]

FPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # FPs/scan of the CPM (paper Table 3)
MAX_MARKS = 100  # LUNA16: marks kept per scan


def fps_key(x: float) -> str:
    """JSON key of an FP rate: 0.125 -> "0.125", 1.0 -> "1"."""
    return f"{x:g}"


@dataclass(frozen=True)
class FrocEntries:
    """The FROC samples of one evaluation, one row per detected nodule or FP mark.

    ``scan (E,) int64`` index into the seriesuids list; ``score (E,) float64`` probability
    (a detected nodule's is its best mark's); ``is_tp (E,) bool``; ``nodules_per_scan (S,)
    int64`` included nodules of each scan (detected or missed). Counters are diagnostics."""

    scan: np.ndarray
    score: np.ndarray
    is_tp: np.ndarray
    nodules_per_scan: np.ndarray
    n_marks_kept: int = 0
    n_marks_capped: int = 0
    n_irrelevant: int = 0
    n_double: int = 0

    @property
    def n_scans(self) -> int:
        return int(self.nodules_per_scan.shape[0])


# ----------------------------------------------------------------------------------------
# Input checks and grouping
# ----------------------------------------------------------------------------------------


def _check_seriesuids(seriesuids: Sequence[str], name: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, u in enumerate(seriesuids):
        u = str(u)
        if u in index:
            raise LUNA16FormatError(
                f"{name}: line {i + 1}: duplicated scan {u!r} (first listed on line {index[u] + 1})"
            )
        index[u] = i
    if not index:
        raise LUNA16FormatError(f"{name}: no scans listed")
    return index


def _check_predictions(pred, index: dict[str, int], name: str) -> np.ndarray:
    """Scan index of every mark; refuses unknown scans and non-finite numbers ("row i" is
    0-based in the arrays; line i + 2 of a CSV with a header)."""
    uids = np.asarray(pred.seriesuid).astype(str).reshape(-1)
    xyz = np.asarray(pred.xyz, np.float64).reshape(-1, 3)
    prob = np.asarray(pred.probability, np.float64).reshape(-1)
    if not (len(uids) == len(xyz) == len(prob)):
        raise LUNA16FormatError(
            f"{name}: seriesuid/xyz/probability lengths differ: {len(uids)}, {len(xyz)}, "
            f"{len(prob)}"
        )
    bad = ~(np.isfinite(xyz).all(1) & np.isfinite(prob))
    if bad.any():
        i = int(np.argmax(bad))
        raise LUNA16FormatError(
            f"{name}: row {i} (line {i + 2}): non-finite coordinate or probability "
            f"(xyz={xyz[i].tolist()}, probability={prob[i]})"
        )
    scan = np.empty(len(uids), np.int64)
    for i, u in enumerate(uids):
        s = index.get(u)
        if s is None:
            raise LUNA16FormatError(
                f"{name}: row {i} (line {i + 2}): seriesuid {u!r} is not in the seriesuids list"
            )
        scan[i] = s
    return scan


def _group_findings(ann, index: dict[str, int], name: str):
    """Findings of listed scans (others ignored, as the official script does), sorted by scan:
    returns (xyz (M,3), radius^2 (M,), offsets (S+1,))."""
    n_scans = len(index)
    if ann is None:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(n_scans + 1, np.int64)
    uids = np.asarray(ann.seriesuid).astype(str).reshape(-1)
    xyz = np.asarray(ann.xyz, np.float64).reshape(-1, 3)
    d = np.asarray(ann.diameter_mm, np.float64).reshape(-1)
    bad = ~(np.isfinite(xyz).all(1) & np.isfinite(d))
    if bad.any():
        i = int(np.argmax(bad))
        raise LUNA16FormatError(f"{name}: row {i} (line {i + 2}): non-finite coordinate/diameter")
    scan = np.array([index.get(u, -1) for u in uids], np.int64)
    keep = scan >= 0
    scan, xyz, d = scan[keep], xyz[keep], d[keep]
    order = np.argsort(scan, kind="stable")
    r2 = hit_radius_sq(d)[order]
    offsets = np.r_[0, np.cumsum(np.bincount(scan, minlength=n_scans))]
    return xyz[order], r2, offsets


# ----------------------------------------------------------------------------------------
# Matching (per scan) and the FROC curve
# ----------------------------------------------------------------------------------------


def irrelevant_below(annotations, excluded, min_diameter_mm: float):
    """Split at ``min_diameter_mm``: (included nodules >= it, excluded findings plus the
    smaller included nodules, which keep their diameter as hit radius). 0 -> unchanged."""
    if annotations is None or float(min_diameter_mm) <= 0:
        return annotations, excluded
    d = np.asarray(annotations.diameter_mm, np.float64).reshape(-1)
    uid = np.asarray(annotations.seriesuid).astype(str).reshape(-1)
    xyz = np.asarray(annotations.xyz, np.float64).reshape(-1, 3)
    small = d < float(min_diameter_mm)
    keep = luna16.Annotations(uid[~small], xyz[~small], d[~small])
    parts = [(uid[small], xyz[small], d[small])]
    if excluded is not None:
        parts.insert(0, (np.asarray(excluded.seriesuid).astype(str).reshape(-1),
                         np.asarray(excluded.xyz, np.float64).reshape(-1, 3),
                         np.asarray(excluded.diameter_mm, np.float64).reshape(-1)))
    exc = luna16.Annotations(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
    return keep, exc


def match_marks(
    annotations,
    excluded,
    seriesuids: Sequence[str],
    predictions,
    *,
    max_marks: int = MAX_MARKS,
    names: tuple[str, str, str, str] = ("annotations", "excluded", "seriesuids", "predictions"),
) -> FrocEntries:
    """Apply the LUNA16 hit rules scan by scan (module docstring) -> :class:`FrocEntries`.

    ``annotations``/``excluded``: objects with ``seriesuid (N,)``, ``xyz (N,3)`` world mm,
    ``diameter_mm (N,)`` (``nodulejax.data.luna16.Annotations``; ``excluded`` may be None);
    ``predictions``: ``seriesuid (K,)``, ``xyz (K,3)``, ``probability (K,)``."""
    index = _check_seriesuids(seriesuids, names[2])
    n_scans = len(index)
    m_scan = _check_predictions(predictions, index, names[3])
    m_xyz = np.asarray(predictions.xyz, np.float64).reshape(-1, 3)
    m_p = np.asarray(predictions.probability, np.float64).reshape(-1)
    order = np.argsort(m_scan, kind="stable")
    m_xyz, m_p = m_xyz[order], m_p[order]
    m_off = np.r_[0, np.cumsum(np.bincount(m_scan, minlength=n_scans))]
    a_xyz, a_r2, a_off = _group_findings(annotations, index, names[0])
    e_xyz, e_r2, e_off = _group_findings(excluded, index, names[1])

    scans, scores, tps = [], [], []
    kept = capped = irrelevant = double = 0
    for s in range(n_scans):
        mx, mp = m_xyz[m_off[s] : m_off[s + 1]], m_p[m_off[s] : m_off[s + 1]]
        if max_marks > 0 and len(mp) > max_marks:
            thr = np.sort(mp)[::-1][max_marks]  # the (max_marks+1)-th highest
            keep = mp > thr
            capped += int(len(mp) - keep.sum())
            mx, mp = mx[keep], mp[keep]
        kept += len(mp)
        if len(mp) == 0:
            continue
        fp = np.ones(len(mp), bool)
        ax, ar2 = a_xyz[a_off[s] : a_off[s + 1]], a_r2[a_off[s] : a_off[s + 1]]
        if len(ax):
            hit = hit_matrix(mx, ax, ar2)  # (marks, nodules)
            found = hit.any(0)
            best = np.where(hit, mp[:, None], -np.inf).max(0)[found]
            scans.append(np.full(len(best), s))
            scores.append(best)
            tps.append(np.ones(len(best), bool))
            on_nodule = hit.any(1)
            double += int(hit.sum() - found.sum())
            fp &= ~on_nodule
        ex, er2 = e_xyz[e_off[s] : e_off[s + 1]], e_r2[e_off[s] : e_off[s + 1]]
        if len(ex):
            on_excluded = hit_matrix(mx, ex, er2).any(1)
            irrelevant += int((on_excluded & fp).sum())
            fp &= ~on_excluded
        scans.append(np.full(int(fp.sum()), s))
        scores.append(mp[fp])
        tps.append(np.zeros(int(fp.sum()), bool))

    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)
    return FrocEntries(
        scan=cat(scans, np.int64),
        score=cat(scores, np.float64),
        is_tp=cat(tps, bool),
        nodules_per_scan=np.diff(a_off).astype(np.int64),
        n_marks_kept=kept,
        n_marks_capped=capped,
        n_irrelevant=irrelevant,
        n_double=double,
    )


def froc_curve(entries: FrocEntries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC curve ``(fps_per_scan (P,), sensitivity (P,), thresholds (P,))``, P = distinct
    probabilities + 1 (the origin, threshold +inf), as sklearn ``roc_curve`` + the official
    ``computeFROC`` give it (without ``drop_intermediate``, which only removes collinear points
    and so changes no interpolated value)."""
    order, score, ends = sorted_entries(entries)
    tp = entries.is_tp[order]
    cum_tp = np.r_[0.0, np.cumsum(tp, dtype=np.float64)[ends]]
    cum_fp = np.r_[0.0, np.cumsum(~tp, dtype=np.float64)[ends]]
    fps, sens = curve_from_counts(
        cum_tp, cum_fp, float(entries.nodules_per_scan.sum()), entries.n_scans
    )
    return fps, sens, np.r_[np.inf, score[ends]]


def sensitivity_at(fps: np.ndarray, sens: np.ndarray, targets=FPS) -> np.ndarray:
    """Sensitivity at the given FPs/scan by linear interpolation of the curve (``np.interp``,
    as the official script)."""
    return np.interp(np.asarray(targets, np.float64), fps, sens)


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------


def evaluate(
    annotations,
    excluded,
    seriesuids: Sequence[str],
    predictions,
    *,
    fps: Sequence[float] = FPS,
    bootstrap: int = 1000,
    seed: int = 0,
    max_marks: int = MAX_MARKS,
    curve_points: int = 200,
    names: tuple[str, str, str, str] = ("annotations", "excluded", "seriesuids", "predictions"),
    min_diameter_mm: float = 0.0,
) -> dict:
    """LUNA16 FROC evaluation of ``predictions`` -> JSON-able dict.

    Keys: ``cpm``, ``sensitivity_at`` {"0.125": .., .., "8": ..}, ``cpm_ci`` [lo, hi] and
    ``sensitivity_ci`` {key: [lo, hi]} (None when ``bootstrap == 0``), ``n_nodules``,
    ``n_detected``, ``n_fp_marks``, ``n_scans``, ``n_marks`` (kept after the 100 cap),
    ``curve`` {fps, sensitivity, thresholds} (the full FROC curve; threshold i is the lowest
    probability counted at point i, None for the origin), ``band`` {fps, lo, hi} (bootstrap
    interval on a log grid 1/8..8, for the plot), ``bootstrap``, ``seed``,
    ``min_diameter_mm``. ``min_diameter_mm``: included nodules below it are irrelevant
    findings (:func:`irrelevant_below`)."""
    fps = tuple(float(x) for x in fps)
    annotations, excluded = irrelevant_below(annotations, excluded, min_diameter_mm)
    entries = match_marks(
        annotations, excluded, seriesuids, predictions, max_marks=max_marks, names=names
    )
    curve_fps, curve_sens, curve_thr = froc_curve(entries)
    sens = sensitivity_at(curve_fps, curve_sens, fps)
    res: dict = {
        "cpm": float(np.mean(sens)),
        "sensitivity_at": {fps_key(x): float(v) for x, v in zip(fps, sens, strict=True)},
        "cpm_ci": None,
        "sensitivity_ci": None,
        "n_nodules": int(entries.nodules_per_scan.sum()),
        "n_detected": int(entries.is_tp.sum()),
        "n_fp_marks": int((~entries.is_tp).sum()),
        "n_scans": entries.n_scans,
        "n_marks": int(entries.n_marks_kept),
        "n_marks_capped": int(entries.n_marks_capped),
        "n_marks_on_excluded": int(entries.n_irrelevant),
        "curve": {"fps": curve_fps.tolist(), "sensitivity": curve_sens.tolist(),
                  "thresholds": [None if not np.isfinite(t) else float(t) for t in curve_thr]},
        "band": None,
        "bootstrap": int(bootstrap),
        "seed": int(seed),
        "min_diameter_mm": float(min_diameter_mm),
    }
    if bootstrap > 0:
        grid = np.geomspace(min(fps), max(fps), curve_points)
        bs = bootstrap_sensitivity(entries, np.r_[fps, grid], bootstrap, seed)
        ci_s = order_stat_ci(bs[:, : len(fps)])
        res["cpm_ci"] = order_stat_ci(bs[:, : len(fps)].mean(1)).tolist()
        res["sensitivity_ci"] = {fps_key(x): ci_s[i].tolist() for i, x in enumerate(fps)}
        band = order_stat_ci(bs[:, len(fps) :])
        res["band"] = {"fps": grid.tolist(), "lo": band[:, 0].tolist(), "hi": band[:, 1].tolist()}
    return res


def read_files(
    annotations: str | os.PathLike,
    excluded: str | os.PathLike | None,
    seriesuids: str | os.PathLike,
    predictions: str | os.PathLike,
) -> tuple:
    """The LUNA16 CSV files read by ``nodulejax.data.luna16`` (which refuses malformed rows,
    non-finite numbers, duplicate scans and marks on unlisted scans, naming the file and
    line) -> ``(annotations, excluded or None, seriesuids, predictions, names)``, the
    arguments of :func:`match_marks` / :func:`evaluate`."""
    uids = luna16.read_seriesuids(seriesuids)
    ann = luna16.read_annotations(annotations, unknown_diameter=False)
    exc = (luna16.read_annotations(excluded, unknown_diameter=True)
           if excluded is not None else None)
    pred = luna16.read_predictions(predictions, known_uids=uids)
    names = tuple(
        os.fspath(p) if p is not None else "excluded"
        for p in (annotations, excluded, seriesuids, predictions)
    )
    return ann, exc, uids, pred, names


def evaluate_files(
    annotations: str | os.PathLike,
    excluded: str | os.PathLike | None,
    seriesuids: str | os.PathLike,
    predictions: str | os.PathLike,
    **kwargs,
) -> dict:
    """:func:`evaluate` on LUNA16 CSV files (:func:`read_files`). ``excluded`` may be None
    (no excluded findings). The result's ``n_scans_without_marks`` counts the listed scans
    without a single prediction (a seriesuids file of other scans than the predictions' lowers
    every sensitivity)."""
    ann, exc, uids, pred, names = read_files(annotations, excluded, seriesuids, predictions)
    res = evaluate(ann, exc, uids, pred, names=names, **kwargs)
    res["n_scans_without_marks"] = len(set(uids) - {str(u) for u in pred.seriesuid})
    return res


def write_outputs(result: dict, out_dir: str | os.PathLike, name: str = "run") -> None:
    """Write ``froc.json`` (``result`` plus ``name``), ``froc.png`` and ``table3_row.md``."""
    os.makedirs(out_dir, exist_ok=True)
    res = dict(result, name=name)
    atomic_write_json(os.path.join(out_dir, "froc.json"), res, indent=1)
    plot_froc(res, os.path.join(out_dir, "froc.png"), name=name)
    atomic_write_text(os.path.join(out_dir, "table3_row.md"),
                      table3_header(res) + "\n" + table3_row(res, name) + "\n")


def _define(fv):
    flags.DEFINE_string("annotations", None, "annotations.csv", flag_values=fv)
    flags.DEFINE_string("excluded", None, "annotations_excluded.csv (optional)", flag_values=fv)
    flags.DEFINE_string("seriesuids", None, "the evaluated scans, one seriesuid a line (the "
                        "study's test split: WORKDIR/eval/seriesuids_test.csv)", flag_values=fv)
    flags.DEFINE_string("predictions", None, "submission CSV (seriesuid,coordX,coordY,coordZ,"
                        "probability)", flag_values=fv)
    flags.DEFINE_string("out", None, "output folder (froc.json, froc.png, table3_row.md)",
                        flag_values=fv)
    flags.DEFINE_integer("bootstrap", None, "bootstrap resamples of the CPM CI (default: "
                         "config.eval.bootstrap with --config, else 1000)", flag_values=fv)
    flags.DEFINE_integer("seed", None, "bootstrap seed (default: config.seed, else 0)",
                         flag_values=fv)
    flags.DEFINE_float("min_diameter_mm", None, "included nodules below this diameter are "
                       "irrelevant findings (paper: 6; default: config.eval.min_diameter_mm "
                       "with --config, else 0)", flag_values=fv)
    flags.DEFINE_string("name", None, "row name (default: the --out folder name)",
                        flag_values=fv)
    return ["annotations", "seriesuids", "predictions", "out"]


def _main(fv) -> int:
    config, out = fv["config"].value, fv["out"].value
    boot = fv["bootstrap"].value
    boot = boot if boot is not None else int(config.eval.bootstrap) if config else 1000
    seed = fv["seed"].value
    seed = seed if seed is not None else int(config.seed) if config else 0
    dmin = fv["min_diameter_mm"].value
    dmin = dmin if dmin is not None else float(config.eval.min_diameter_mm) if config else 0.0
    name = fv["name"].value or os.path.basename(os.path.normpath(out))
    res = evaluate_files(fv["annotations"].value, fv["excluded"].value, fv["seriesuids"].value,
                         fv["predictions"].value, bootstrap=boot, seed=seed,
                         min_diameter_mm=dmin)
    if res["n_scans_without_marks"]:
        print(f"warning: {res['n_scans_without_marks']} of {res['n_scans']} scans in "
              f"{fv['seriesuids'].value} have no prediction in {fv['predictions'].value}; "
              "they count as scans without a detection (is this the predictions' split?)",
              file=sys.stderr, flush=True)
    write_outputs(res, out, name)
    ci = res["cpm_ci"]
    print(
        f"{name}: CPM {res['cpm']:.4f}"
        + (f" (95% CI {ci[0]:.4f} - {ci[1]:.4f})" if ci else "")
        + f"; {res['n_detected']}/{res['n_nodules']} nodules, {res['n_fp_marks']} FP marks,"
        f" {res['n_scans']} scans -> {out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nodulejax.evaluation.froc``: exit code."""
    return run_main("python -m nodulejax.evaluation.froc", _define, _main, argv,
                    doc="LUNA16-exact FROC/CPM evaluation with bootstrap confidence intervals.",
                    config="optional")


if __name__ == "__main__":
    sys.exit(main())
