"""Detection over scans with a per-scan candidate cache, and the CLI (issue 6).

    python -m nodulejax.detect --config configs/demo.py --workdir runs/demo \
        --data runs/demo/data --out predictions.csv [--folds 8,9] [--fpr-model NAME]

CG params come from ``WORKDIR/checkpoints/{cg,cg_ggo,rpn}`` and the FPR params from
``WORKDIR/checkpoints/<NAME>`` (``nodulejax.checkpoint.load_params``). ``--fpr-model none``
writes the CG scores instead (the candidate stage alone). Candidates are cached in
``WORKDIR/candidates/<uid>.npz`` (with the CG settings that made them), so the study's nine
FPR models score the same candidates without rerunning the CG. The candidate-stage
sensitivity (Section 5.2) is printed and written to ``WORKDIR/candidates/sensitivity.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import time

import numpy as np

from nodulejax import detect as dt
from nodulejax.checkpoint import load_params
from nodulejax.data import luna16
from nodulejax.errors import CheckpointError, ConfigError

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
            "window_overlap", "window_size", "input_size", "blend", "rpn_candidates", "rpn_iou")
    d = {k: (list(g[k]) if isinstance(g[k], tuple) else g[k]) for k in keys if k in g}
    d["widths"] = [list(g.get("widths", ())), g.get("width_growth", 2.0)]
    d["spacing"] = float(config.data.spacing)
    return json.dumps(d, sort_keys=True)


def cached_candidates(cg_params, config, scan, cache_dir: str | None):
    """``generate_candidates`` for one scan, read from / written to ``cache_dir/<uid>.npz``
    (recomputed when the cached file was made with other CG settings)."""
    path = os.path.join(cache_dir, f"{scan.uid}.npz") if cache_dir else None
    fp = _cg_fingerprint(config)
    if path and os.path.exists(path):
        with np.load(path) as z:
            if str(z["fingerprint"]) == fp:
                return z["zyx"], z["scores"], z["source"]
    if cg_params is None:
        raise CheckpointError(f"no cached candidates for scan {scan.uid} in {cache_dir} "
                              "and no CG params given")
    zyx, scores, source = dt.generate_candidates(cg_params, config, scan)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, zyx=zyx, scores=scores, source=source, fingerprint=np.array(fp))
        os.replace(tmp, path)
    return zyx, scores, source


def detect_scans(config, scans, *, cg_params=None, fpr_params=None, cache_dir=None,
                 fpr_model=None):
    """Detections for ``scans``: candidates (cached) scored by the FPR (or, with
    ``fpr_params=None``, by the CG).

    Returns (rows, info): rows = list of (uid, x, y, z, probability) in world LPS mm;
    info = candidate-stage sensitivity (``detect.candidate_sensitivity``) plus
    ``seconds_per_scan``.
    """
    rows, cands = [], {}
    t0 = time.perf_counter()
    for s in scans:
        zyx, scores, source = cached_candidates(cg_params, config, s, cache_dir)
        cands[s.uid] = (zyx, scores, source)
        probs = (scores if fpr_params is None else
                 dt.score_candidates(fpr_params, config, s, zyx, model=fpr_model))
        for xyz, p in zip(dt.to_world(s, zyx), probs, strict=False):
            rows.append((s.uid, float(xyz[0]), float(xyz[1]), float(xyz[2]), float(p)))
    info = dt.candidate_sensitivity(scans, cands)
    info["seconds_per_scan"] = (time.perf_counter() - t0) / max(len(scans), 1)
    return rows, info


def write_rows(path: str, rows) -> None:
    """LUNA16 submission CSV of ``detect_scans`` rows."""
    uid = np.array([r[0] for r in rows], dtype=object)
    xyz = np.array([r[1:4] for r in rows], np.float64).reshape(-1, 3)
    prob = np.array([r[4] for r in rows], np.float64)
    luna16.write_submission(path, uid, xyz, prob)


def load_config(spec: str):
    """``path/to/config.py`` or ``path.py:arg`` -> ``get_config()`` / ``get_config(arg)``."""
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise ConfigError(f"--config {spec}: no such file {path}")
    mod_spec = importlib.util.spec_from_file_location("_nodulejax_config", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.get_config(arg) if arg else mod.get_config()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m nodulejax.detect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--data", required=True, help="dataset folder in the LUNA16 layout")
    ap.add_argument("--out", required=True, help="submission CSV to write")
    ap.add_argument("--folds", default=None, help="comma-separated subsets (default: "
                    "config.data.test_folds)")
    ap.add_argument("--fpr-model", default=None, help="checkpoint name of the FPR model "
                    "(default fpr_<config.train.experiment>; 'none' = CG scores)")
    ap.add_argument("--no-rpn", action="store_true", help="blob candidates only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from nodulejax.data.prepare import prepare_folds

    config = load_config(args.config)
    folds = (tuple(int(f) for f in args.folds.split(",")) if args.folds
             else tuple(config.data.test_folds))
    ds = luna16.Luna16Dataset(args.data)
    scans = prepare_folds(ds, folds, spacing=float(config.data.spacing),
                          window=tuple(config.data.hu_window),
                          cache_dir=os.path.join(args.workdir, "prepared"))
    cache_dir = os.path.join(args.workdir, "candidates")
    os.makedirs(cache_dir, exist_ok=True)
    cg_params = load_cg_params(args.workdir, with_rpn=not args.no_rpn)
    name = args.fpr_model or f"fpr_{config.train.experiment}"
    fpr_params = None if name.lower() == "none" else load_params(args.workdir, name, "best")
    rows, info = detect_scans(config, scans, cg_params=cg_params, fpr_params=fpr_params,
                              cache_dir=cache_dir)
    write_rows(args.out, rows)
    info.update(out=args.out, fpr_model=name, folds=list(folds), n_rows=len(rows))
    with open(os.path.join(cache_dir, "sensitivity.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
