"""LUNA16 FROC / CPM with bootstrap CIs, the paired bootstrap of model differences, Table 3,
the stress tests (Tables 4-6) and the figures (Figs. 5, 6, 8, 9)."""

from __future__ import annotations

from nodulejax.evaluation import bootstrap, figures, froc, plots, stress, table3
from nodulejax.evaluation.bootstrap import (
    independent_means,
    interval,
    paired_froc,
    paired_means,
    patch_draws,
    read_scores,
    write_scores,
)
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
    bootstrap_sensitivity,
    evaluate,
    evaluate_files,
    froc_curve,
    main,
    match_marks,
    multiplicities,
    order_stat_ci,
    read_files,
    scan_draws,
    sensitivity_at,
    table3_row,
    weighted_sensitivity,
    write_outputs,
)
from nodulejax.evaluation.plots import plot_froc
from nodulejax.evaluation.stress import (
    TABLE4_COLUMNS,
    TABLE6_COLUMNS,
    run_stress,
    stress_inputs,
    table5_columns,
    to_markdown,
)
from nodulejax.evaluation.table3 import assemble, find_results, order_rows

__all__ = ["stress", "run_stress", "stress_inputs", "to_markdown", "table5_columns",
           "TABLE4_COLUMNS", "TABLE6_COLUMNS", "figures", "make_figures", "fig5_synthetic",
           "fig6_perturbations", "fig8_real_vs_synthetic", "fig9_noise", "central", "plots",
           "plot_froc", "froc", "FPS", "MAX_MARKS", "FrocEntries", "match_marks", "froc_curve",
           "sensitivity_at", "bootstrap_sensitivity", "evaluate", "evaluate_files",
           "write_outputs", "table3_row", "main", "table3", "find_results", "order_rows",
           "assemble", "read_files", "scan_draws", "multiplicities", "weighted_sensitivity",
           "order_stat_ci", "bootstrap", "paired_froc", "paired_means", "independent_means",
           "patch_draws", "read_scores", "write_scores", "interval"]
