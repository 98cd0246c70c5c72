"""The whole study: its stages in order, the run folder, the report and the toy experiment."""

from __future__ import annotations

from nodulejax.study import claims, context, deviations, plan, report, runner, stages, toy
from nodulejax.study.claims import (
           CLAIMS,
           MARGIN,
           VERDICTS,
           Claim,
           evaluate_claims,
           run_claims,
           stress_claims,
           table3_claims,
           to_markdown,
           verdict,
           whitebox_claims,
           write_claims,
)
from nodulejax.study.context import Study
from nodulejax.study.deviations import (
           DEVIATIONS,
           PAPER_VALUES,
           config_deviations,
           deviations_markdown,
)
from nodulejax.study.plan import (
           INPUTS_KEY,
           check,
           downstream,
           fingerprints,
           marker_inputs,
           rerun_stages,
           stage_fields,
           stale_stages,
)
from nodulejax.study.report import mean_std, write_report
from nodulejax.study.runner import console_log, run, stage_units
from nodulejax.study.stages import (
           run_single,
           stage_augmented,
           stage_cg,
           stage_claims,
           stage_data,
           stage_detect,
           stage_evaluate,
           stage_figures,
           stage_fpr_baselines,
           stage_fpr_seg,
           stage_pool,
           stage_prepare,
           stage_report,
           stage_stress,
           stage_synth,
           stage_toy,
)
from nodulejax.study.toy import (
           decode,
           fpr_bce,
           fpr_logits,
           latent_bce,
           long_tail_subsample,
           make_moons,
           run_toy,
           train_mlp,
           train_vae,
)

__all__ = ["claims", "Claim", "CLAIMS", "MARGIN", "VERDICTS", "verdict", "table3_claims",
           "stress_claims", "whitebox_claims", "evaluate_claims", "write_claims", "to_markdown",
           "run_claims", "context", "Study", "deviations", "DEVIATIONS", "PAPER_VALUES",
           "config_deviations", "deviations_markdown", "report", "write_report", "mean_std", "toy",
           "make_moons", "long_tail_subsample", "fpr_logits", "fpr_bce", "decode", "latent_bce",
           "train_mlp", "train_vae", "run_toy", "stages", "stage_data", "stage_prepare",
           "stage_cg", "stage_fpr_seg", "stage_fpr_baselines", "stage_synth", "stage_pool",
           "stage_augmented", "stage_detect", "stage_evaluate", "stage_stress", "stage_figures",
           "stage_toy", "stage_claims", "stage_report", "run_single", "plan", "stage_fields",
           "fingerprints", "downstream", "rerun_stages", "stale_stages", "check", "marker_inputs",
           "INPUTS_KEY", "runner", "run", "console_log", "stage_units"]
