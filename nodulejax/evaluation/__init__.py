"""LUNA16 FROC / CPM with bootstrap CIs, Table 3, the stress tests (Tables 4-6) and the
figures (Figs. 5, 6, 8, 9)."""

from __future__ import annotations

from nodulejax.evaluation import bootstrap, curves, figures, froc, plots, probes, stress, table3
from nodulejax.evaluation.bootstrap import (
           bootstrap_sensitivity,
           independent_means,
           interval,
           multiplicities,
           order_stat_ci,
           paired_froc,
           paired_means,
           patch_draws,
           read_scores,
           scan_draws,
           weighted_sensitivity,
           write_scores,
)
from nodulejax.evaluation.curves import plot_curves, robustness_curves
from nodulejax.evaluation.figures import (
           central,
           fig5_synthetic,
           fig6_perturbations,
           fig8_real_vs_synthetic,
           fig9_noise,
           make_figures,
)
from nodulejax.evaluation.froc import (
           FPS,
           MAX_MARKS,
           FrocEntries,
           evaluate,
           evaluate_files,
           froc_curve,
           irrelevant_below,
           main,
           match_marks,
           read_files,
           sensitivity_at,
           table3_row,
           write_outputs,
)
from nodulejax.evaluation.plots import plot_froc
from nodulejax.evaluation.probes import apply_noise, image_attack, score_patches
from nodulejax.evaluation.stress import (
           ADVERSARIAL,
           TABLE4_COLUMNS,
           TABLE6_COLUMNS,
           WHITEBOX_TABLES,
           adversarial_inputs,
           benchmark_positives,
           run_stress,
           stress_inputs,
           table5_columns,
           to_markdown,
)
from nodulejax.evaluation.table3 import assemble, find_results, order_rows

__all__ = ["plots", "plot_froc", "froc", "FPS", "MAX_MARKS", "FrocEntries", "match_marks",
           "irrelevant_below", "froc_curve", "sensitivity_at", "bootstrap_sensitivity",
           "scan_draws", "multiplicities", "weighted_sensitivity", "order_stat_ci", "evaluate",
           "evaluate_files", "read_files", "write_outputs", "table3_row", "main", "bootstrap",
           "paired_froc", "paired_means", "independent_means", "patch_draws", "read_scores",
           "write_scores", "interval", "probes", "score_patches", "image_attack", "apply_noise",
           "curves", "robustness_curves", "plot_curves", "figures", "make_figures",
           "fig5_synthetic", "fig6_perturbations", "fig8_real_vs_synthetic", "fig9_noise",
           "central", "stress", "run_stress", "stress_inputs", "adversarial_inputs",
           "benchmark_positives", "to_markdown", "table5_columns", "TABLE4_COLUMNS",
           "TABLE6_COLUMNS", "ADVERSARIAL", "WHITEBOX_TABLES", "table3", "find_results",
           "order_rows", "assemble"]
