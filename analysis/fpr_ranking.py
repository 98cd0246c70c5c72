"""Where a finished study's CPM is lost: how well each FPR model ranks the CG's own test
candidates (what the FROC of Table 3 scores) against how it ranks the test folds'
``candidates_V2`` patches (what training and the report's held-out AUC use), with the CG's
own score as a reference and the candidates' distance to the nodules they hit.

    python analysis/fpr_ranking.py --config configs/demo.py --workdir runs/demo \\
        [--models baseline-ce,baseline-beta-finetune] [--json out.json]

A cached candidate (``WORKDIR/candidates``, written by the detect stage) is a true positive
when it hits an included nodule of at least ``eval.min_diameter_mm`` (the LUNA16 hit rule,
squared distance < (d/2)^2), ignored when it hits only a smaller or excluded finding (as the
FROC ignores it), a false positive otherwise. AUC = P(TP scored above FP) (rank statistic,
``train.fpr.roc_auc``). If the AUC on the CG's candidates is about the AUC on candidates_V2,
the FPR's training negatives are not the reason for a low CPM: its ranking is. The FROC
lives at the top of the ranking, so per model also: the fraction of TP candidates scored
above the k-th highest FP for k = rate x scans (a candidate-level sensitivity at 1/8..8 FPs
per scan), and what the top FPs (k = scans) are: their share of patch voxels outside the
volume (zero padding) and their mean intensity, against the TPs'. Prints one JSON line.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from nodulejax.runtime.cli import print_json_line, run_main  # noqa: E402


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


def outside_fraction(shape, zyx, patch: int):
    """(N,) share of each ``patch``^3 patch centred at ``zyx`` (voxels; placed as
    ``data.patches.patch_start`` places it) that lies outside a volume of ``shape``."""
    import numpy as np

    from nodulejax.data.patches import patch_start

    lo = patch_start(np.asarray(zyx, np.float64).reshape(-1, 3), (patch,) * 3)
    inside = np.clip(np.minimum(lo + patch, shape) - np.maximum(lo, 0), 0, patch)
    return 1.0 - inside.prod(axis=1) / patch ** 3


RATES = (0.125, 0.25, 0.5, 1, 2, 4, 8)


def top_of_ranking(scores, labels, n_scans: int) -> dict:
    """Fraction of TPs (label 1) above the k-th highest FP (label 0), k = rate x n_scans."""
    import numpy as np

    fp = np.sort(scores[labels == 0])[::-1]
    tp = scores[labels == 1]
    out = {}
    for r in RATES:
        k = int(r * n_scans)
        out[str(r)] = float((tp > fp[k - 1]).mean()) if 0 < k <= len(fp) else None
    return out


def _main(fv) -> int:
    import numpy as np

    from nodulejax.data.patches import extract_patches
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
    p = int(c.fpr.patch_size)
    outside = np.concatenate([outside_fraction(s.image.shape, cands[s.uid][0], p)
                              for s in scans])
    mean_int = np.concatenate([extract_patches(s.image, cands[s.uid][0], p, 0.0).mean(
        axis=(1, 2, 3)) for s in scans])
    v2 = fpr_patches(scans, p)
    out = {"workdir": study.workdir, "test_scans": len(scans), "candidates": int(len(lab)),
           "tp": int((lab == 1).sum()), "fp": int((lab == 0).sum()),
           "ignored": int((lab == -1).sum()),
           "v2_pos": int(v2["y"].sum()), "v2_neg": int((v2["y"] == 0).sum()),
           "tp_offset_mm_median": round(float(np.median(off)), 2) if len(off) else None,
           "tp_offset_mm_p90": round(float(np.percentile(off, 90)), 2) if len(off) else None,
           "auc_cg_score": round(roc_auc(cg[keep], lab[keep]), 4),
           "cg_tp_above_kth_fp": top_of_ranking(cg, lab, len(scans)),
           "outside_fraction_mean": {"tp": round(float(outside[lab == 1].mean()), 4),
                                     "fp": round(float(outside[lab == 0].mean()), 4)},
           "mean_intensity": {"tp": round(float(mean_int[lab == 1].mean()), 4),
                              "fp": round(float(mean_int[lab == 0].mean()), 4)},
           "models": {}}
    for name in [m for m in fv["models"].value.split(",") if m]:
        cfg = row_config(c, name)
        params = checkpoint.load_params(study.workdir, model_name(name), which="best")
        fs = np.concatenate([score_candidates(params, cfg, s, cands[s.uid][0])
                             for s in scans])
        v = np.asarray(fpr_scores(params, cfg, v2["x"]))
        tp_med = float(np.median(fs[lab == 1]))
        fp_i = np.flatnonzero(lab == 0)
        top = fp_i[np.argsort(-fs[fp_i], kind="stable")[:len(scans)]]  # top FPs, 1 per scan
        out["models"][name] = {
            "auc_cg_candidates": round(roc_auc(fs[keep], lab[keep]), 4),
            "auc_candidates_v2": round(roc_auc(v, v2["y"]), 4),
            "tp_score_median": round(tp_med, 4),
            "fp_score_median": round(float(np.median(fs[lab == 0])), 4),
            "fp_above_tp_median": round(float((fs[lab == 0] > tp_med).mean()), 4),
            "tp_above_kth_fp": top_of_ranking(fs, lab, len(scans)),
            "top_fp_score_min": round(float(fs[top].min()), 4),
            "top_fp_outside_fraction_mean": round(float(outside[top].mean()), 4),
            "top_fp_mean_intensity": round(float(mean_int[top].mean()), 4),
            "top_fp_cg_score_median": round(float(np.median(cg[top])), 4)}
    print_json_line(out, fv["json"].value)
    return 0


def main(argv=None) -> int:
    return run_main("analysis/fpr_ranking.py", _define, _main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
