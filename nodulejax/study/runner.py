"""The whole study in one resumable run (the README's main command).

``run(config, workdir)`` with ``config.stage == "study"`` walks the paper's pipeline:

  data      phantom generation (config.data.kind == "phantom") or a LUNA16 folder
  prepare   resample / window / lung-mask every scan (cached), dataset summary + picture
  cg        candidate generators: blob ResUNet, GGO fine-tune, RPN head      (Section 3.1)
  fpr_seg   DenseUNet segmentation pretraining                               (Section 3.1)
  fpr       baselines: baseline-ce, baseline-beta, baseline-beta-finetune    (Table 3)
  synth     VAE + WGAN-GP nodule synthesizer                                 (Section 3.2)
  pool      PGD augmentation pool against baseline-beta-finetune           (Sections 3.2-3.3, 4)
  augmented the six augmented Table 3 rows                                   (Section 3.3)
  detect    whole-scan CG -> candidates -> each FPR model -> LUNA16 CSVs    (Section 5.2)
  evaluate  FROC / CPM with bootstrap CIs per model, Table 3
  stress    Tables 4-6, transfer (as Section 4) + white-box, robustness curves (Section 5.3)
  figures   Figs. 5, 6, 8, 9: PGD-synthetic vs real nodules, perturbation examples
  toy       the two-moons experiment (Fig. 7)                                (Section 5.1)
  report    WORKDIR/report/report.md with its figures

The stage functions and their order live in :mod:`nodulejax.study.stages` (``STUDY_STAGES``),
the run's folder and scans in :class:`nodulejax.study.context.Study`. Each finished stage
writes ``WORKDIR/stages/<stage>.json`` (its wall time and outputs); a re-run
skips it. A stage killed midway resumes from its checkpoints (nodulejax.train.loop.fit). A
single stage can be run with ``--config.stage=NAME`` (its inputs must exist).
"""

from __future__ import annotations

from nodulejax.study import stages
from nodulejax.study.context import Study

__all__ = ["run"]


def run(config, workdir: str) -> dict:
    """Run ``config.stage`` ("study" = every stage in order, skipping finished ones)."""
    study = Study(config, workdir)
    stage = config.stage
    if stage == "study":
        return {name: study.run_stage(name, lambda n=name: stages.STAGES[n](study))
                for name in stages.STUDY_STAGES}
    if stage in stages.STAGES:
        return study.run_stage(stage, lambda: stages.STAGES[stage](study))
    return stages.run_single(study, stage)
