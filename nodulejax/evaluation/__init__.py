"""LUNA16 FROC / CPM with bootstrap CIs, Table 3, the stress tests (Tables 4-6, transfer and
white-box), robustness curves and the figures (Figs. 5, 6, 8, 9)."""

from __future__ import annotations

from nodulejax.evaluation import curves, figures, froc, plots, probes, stress, table3
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
    bootstrap_sensitivity,
    evaluate,
    evaluate_files,
    froc_curve,
    irrelevant_below,
    main,
    match_marks,
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

__all__ = ["stress", "run_stress", "stress_inputs", "to_markdown", "table5_columns",
           "TABLE4_COLUMNS", "TABLE6_COLUMNS", "ADVERSARIAL", "WHITEBOX_TABLES",
           "adversarial_inputs", "benchmark_positives", "curves", "robustness_curves",
           "plot_curves", "probes", "score_patches", "image_attack", "apply_noise", "figures",
           "make_figures", "fig5_synthetic", "fig6_perturbations", "fig8_real_vs_synthetic",
           "fig9_noise", "central", "plots", "plot_froc", "froc", "FPS", "MAX_MARKS",
           "FrocEntries", "match_marks", "froc_curve", "sensitivity_at", "bootstrap_sensitivity",
           "evaluate", "evaluate_files", "irrelevant_below", "write_outputs", "table3_row", "main",
           "table3", "find_results", "order_rows", "assemble"]
