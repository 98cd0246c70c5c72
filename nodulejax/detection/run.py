"""Detection over prepared scans with a per-scan candidate cache (Section 5.2).

CG params come from ``WORKDIR/checkpoints/{cg,cg_ggo,rpn}`` and the FPR params from
``WORKDIR/checkpoints/<NAME>`` (``nodulejax.runtime.checkpoint.load_params``). ``--fpr-model none``
writes the CG scores instead (the candidate stage alone). Candidates are cached in
``WORKDIR/candidates/<uid>.npz`` (with the CG settings that made them), so the study's nine
FPR models score the same candidates without rerunning the CG. The candidate-stage
sensitivity (Section 5.2) is printed and written to ``WORKDIR/candidates/sensitivity.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from nodulejax.data import luna16
from nodulejax.detection import detector as dt
from nodulejax.errors import CheckpointError
from nodulejax.runtime.checkpoint import load_params
from nodulejax.runtime.files import atomic_savez

log = logging.getLogger(__name__)


def load_cg_params(workdir: str, with_rpn: bool = True) -> dict:
    """{"cg", "cg_ggo", "rpn"} params of a trained CG (``rpn`` None when absent and allowed)."""
    out = {"cg": load_params(workdir, "cg", "latest"),
           "cg_ggo": load_params(workdir, "cg_ggo", "latest"), "rpn": None}
    if with_rpn:
        out["rpn"] = load_params(workdir, "rpn", "latest")
    return out


def _cg_fingerprint(config) -> str:
    g = config.cg
    keys = ("width", "depth", "anchors_mm", "rpn_width", "num_candidates", "nms_radius_mm",
            "window_overlap", "window_size", "input_size", "blend", "rpn_candidates", "rpn_iou",
            "rpn_pre_nms")
    d = {k: (list(g[k]) if isinstance(g[k], tuple) else g[k]) for k in keys if k in g}
    d["widths"] = [list(g.get("widths", ())), g.get("width_growth", 2.0)]
    d["spacing"] = float(config.data.spacing)
    d["union"] = "capped at num_candidates"  # caches of the uncapped union are recomputed
    d["roi"] = [g.get("roi_margin_mm"), "rpn boxes in the roi too"]  # older caches: recomputed
    return json.dumps(d, sort_keys=True)


def cached_candidates(cg_params, config, scan, cache_dir: str | None, progress: bool = False):
    """``generate_candidates`` for one scan, read from / written to ``cache_dir/<uid>.npz``
    (recomputed when the cached file was made with other CG settings)."""
    path = os.path.join(cache_dir, f"{scan.uid}.npz") if cache_dir else None
    fp = _cg_fingerprint(config)
    if path and os.path.exists(path):
        with np.load(path) as z:
            if str(z["fingerprint"]) == fp:
                return z["zyx"], z["scores"], z["source"]
    if cg_params is None:
        why = ("was made with other CG settings (or an older detector)"
               if path and os.path.exists(path) else "does not exist")
        raise CheckpointError(f"candidate cache {path or cache_dir} for scan {scan.uid} {why}, "
                              "and no CG params were given to recompute it")
    zyx, scores, source = dt.generate_candidates(cg_params, config, scan, progress)
    if path:
        atomic_savez(path, zyx=zyx, scores=scores, source=source, fingerprint=np.array(fp))
    return zyx, scores, source


def detect_scans(config, scans, *, cg_params=None, fpr_params=None, cache_dir=None,
                 fpr_model=None, progress: bool | None = None, desc: str = "detection"):
    """Detections for ``scans``: candidates (cached) scored by the FPR (or, with
    ``fpr_params=None``, by the CG).

    Returns (rows, info): rows = list of (uid, x, y, z, probability) in world LPS mm;
    info = candidate-stage sensitivity (``detect.candidate_sensitivity``) plus
    ``seconds_per_scan``. ``progress`` (default ``config.train.progress``): a tqdm bar over
    the scans (and one over each scan's windows while its candidates are computed).
    """
    from tqdm.auto import tqdm

    progress = bool(config.train.get("progress", True)) if progress is None else progress
    rows, cands = [], {}
    t0 = time.perf_counter()
    for s in tqdm(scans, desc=desc, unit="scan", disable=not progress, dynamic_ncols=True):
        zyx, scores, source = cached_candidates(cg_params, config, s, cache_dir, progress)
        cands[s.uid] = (zyx, scores, source)
        probs = (scores if fpr_params is None else
                 dt.score_candidates(fpr_params, config, s, zyx, model=fpr_model))
        for xyz, p in zip(dt.to_world(s, zyx), probs, strict=False):
            rows.append((s.uid, float(xyz[0]), float(xyz[1]), float(xyz[2]), float(p)))
    info = dt.candidate_sensitivity(scans, cands,
                                    float(config.get("eval", {}).get("min_diameter_mm", 0.0)))
    info["seconds_per_scan"] = (time.perf_counter() - t0) / max(len(scans), 1)
    return rows, info


def write_rows(path: str, rows) -> None:
    """LUNA16 submission CSV of ``detect_scans`` rows."""
    uid = np.array([r[0] for r in rows], dtype=object)
    xyz = np.array([r[1:4] for r in rows], np.float64).reshape(-1, 3)
    prob = np.array([r[4] for r in rows], np.float64)
    luna16.write_submission(path, uid, xyz, prob)
