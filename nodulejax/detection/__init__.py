"""Whole-scan detection: CG windows, candidates, FPR scoring and LUNA16 submissions
(``python -m nodulejax.detection``)."""

from __future__ import annotations

from nodulejax.detection import detector, run
from nodulejax.detection.detector import (
           blend_weights,
           candidate_sensitivity,
           cap_candidates,
           cg_maps,
           generate_candidates,
           heatmap_candidates,
           hits,
           lung_roi,
           merge_candidates,
           score_candidates,
           sliding_window,
           to_world,
           window_grid,
           window_size,
)
from nodulejax.detection.run import cached_candidates, detect_scans, load_cg_params, write_rows

__all__ = ["detector", "window_size", "window_grid", "blend_weights", "sliding_window",
           "heatmap_candidates", "merge_candidates", "cg_maps", "lung_roi", "generate_candidates",
           "cap_candidates", "hits", "candidate_sensitivity", "score_candidates", "to_world",
           "run", "load_cg_params", "cached_candidates", "detect_scans", "write_rows"]
