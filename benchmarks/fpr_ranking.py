"""Where a finished study's CPM is lost: how well each FPR model ranks the CG's own test
candidates (what the FROC of Table 3 scores) against how it ranks the test folds'
``candidates_V2`` patches (what training and the report's held-out AUC use), with the CG's
own score as a reference and the candidates' distance to the nodules they hit.

    python benchmarks/fpr_ranking.py --config configs/demo.py --workdir runs/demo \\
        [--models baseline-ce,baseline-beta-finetune] [--json out.json]

A cached candidate (``WORKDIR/candidates``, written by the detect stage) is a true positive
when it hits an included nodule of at least ``eval.min_diameter_mm`` (the LUNA16 hit rule,
squared distance < (d/2)^2), ignored when it hits only a smaller or excluded finding (as the
FROC ignores it), a false positive otherwise. AUC = P(TP scored above FP) (rank statistic,
``train.fpr.roc_auc``). If the AUC on the CG's candidates is about the AUC on candidates_V2,
the FPR's training negatives are not the reason for a low CPM: its ranking is. Prints one
JSON line.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from nodulejax.runtime.cli import run_main  # noqa: E402


def _define(fv):
    flags.DEFINE_string("workdir", None, "finished study run folder (detect stage done)",
                        flag_values=fv)
    flags.DEFINE_string("models", "baseline-ce,baseline-beta,baseline-beta-finetune",
                        "comma-separated Table 3 rows", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result here", flag_values=fv)
    return ["workdir"]


def candidate_labels(scan, zyx, min_diameter_mm: float):
    """(N,) int8 of candidates ``zyx`` (voxels): 1 hits an included nodule >= the diameter,
    -1 hits only another finding (ignored), 0 false positive; and the distance (mm) from each
    hit included nodule to its nearest candidate."""
    import numpy as np

    from nodulejax.data.luna16 import hit_matrix, hit_radius_sq

    nod = np.reshape(scan.nodules_zyx, (-1, 3))
    exc = np.reshape(scan.excluded_zyx, (-1, 3))
    centres = np.concatenate([nod, exc])
    diam = np.concatenate([np.ravel(scan.nodules_diam_mm), np.ravel(scan.excluded_diam_mm)])
    h = hit_matrix(np.asarray(zyx) * scan.spacing, centres * scan.spacing, hit_radius_sq(diam))
    inc = np.zeros(len(centres), bool)
    inc[:len(nod)] = np.ravel(scan.nodules_diam_mm) >= min_diameter_mm
    labels = np.where(h[:, inc].any(1), 1, np.where(h.any(1), -1, 0)).astype(np.int8)
    offsets = [np.linalg.norm((zyx[h[:, j]] - centres[j]) * scan.spacing, axis=1).min()
               for j in np.flatnonzero(inc) if h[:, j].any()]
    return labels, np.asarray(offsets, np.float64)


def _main(fv) -> int:
    import numpy as np

    from nodulejax.data.patchsets import fpr_patches
    from nodulejax.detection.detector import score_candidates
    from nodulejax.detection.run import cached_candidates
    from nodulejax.experiments import model_name, row_config
    from nodulejax.runtime import checkpoint
    from nodulejax.study.context import Study
    from nodulejax.train.fpr import fpr_scores, roc_auc

    c = fv["config"].value
    study = Study(c, fv["workdir"].value)
    scans = study.scans("test")
    cache = os.path.join(study.workdir, "candidates")
    cands = {s.uid: cached_candidates(None, c, s, cache) for s in scans}
    mind = float(c.eval.get("min_diameter_mm", 0.0))
    lab, off = zip(*(candidate_labels(s, cands[s.uid][0], mind) for s in scans), strict=True)
    lab, off = np.concatenate(lab), np.concatenate(off)
    cg = np.concatenate([cands[s.uid][1] for s in scans])
    keep = lab >= 0
    v2 = fpr_patches(scans, int(c.fpr.patch_size))
    out = {"workdir": study.workdir, "test_scans": len(scans), "candidates": int(len(lab)),
           "tp": int((lab == 1).sum()), "fp": int((lab == 0).sum()),
           "ignored": int((lab == -1).sum()),
           "v2_pos": int(v2["y"].sum()), "v2_neg": int((v2["y"] == 0).sum()),
           "tp_offset_mm_median": round(float(np.median(off)), 2) if len(off) else None,
           "tp_offset_mm_p90": round(float(np.percentile(off, 90)), 2) if len(off) else None,
           "auc_cg_score": round(roc_auc(cg[keep], lab[keep]), 4), "models": {}}
    for name in [m for m in fv["models"].value.split(",") if m]:
        cfg = row_config(c, name)
        params = checkpoint.load_params(study.workdir, model_name(name), which="best")
        fs = np.concatenate([score_candidates(params, cfg, s, cands[s.uid][0])
                             for s in scans])
        v = np.asarray(fpr_scores(params, cfg, v2["x"]))
        tp_med = float(np.median(fs[lab == 1]))
        out["models"][name] = {
            "auc_cg_candidates": round(roc_auc(fs[keep], lab[keep]), 4),
            "auc_candidates_v2": round(roc_auc(v, v2["y"]), 4),
            "tp_score_median": round(tp_med, 4),
            "fp_score_median": round(float(np.median(fs[lab == 0])), 4),
            "fp_above_tp_median": round(float((fs[lab == 0] > tp_med).mean()), 4)}
    line = json.dumps(out)
    print(line)
    if fv["json"].value:
        with open(fv["json"].value, "w", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


def main(argv=None) -> int:
    return run_main("benchmarks/fpr_ranking.py", _define, _main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
