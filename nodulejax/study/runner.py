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
  claims    every Section 5 claim with a paired bootstrap CI -> report/claims.json
  report    WORKDIR/report/report.md with its figures

The stage functions and their order live in :mod:`nodulejax.study.stages` (``STUDY_STAGES``),
the run's folder and scans in :class:`nodulejax.study.context.Study`. Each finished stage
writes ``WORKDIR/stages/<stage>.json`` (its wall time, outputs and config fingerprint,
:mod:`nodulejax.study.plan`); a re-run skips it when its fingerprint is unchanged (one line per
skipped stage), refuses when it changed, and redoes the stages of ``config.rerun`` and their
downstream stages. A stage killed midway resumes from its checkpoints
(nodulejax.train.loop.fit). A single stage can be run with ``--config.stage=NAME``; its input
stages must have run. Progress is one ``[study] k/N name`` line at the start and end of each
stage (elapsed time, an estimate of the rest); the console is copied to ``WORKDIR/study.log``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from nodulejax.errors import ConfigError, NoduleJaxError
from nodulejax.runtime import memory
from nodulejax.study import plan, stages
from nodulejax.study.context import Study

__all__ = ["run", "console_log", "stage_units"]


def run(config, workdir: str) -> dict:
    """Run ``config.stage`` ("study" = every stage in order, skipping finished ones)."""
    study = Study(config, workdir)
    with console_log(os.path.join(study.workdir, "study.log")) as log:
        try:
            return _dispatch(study, config.stage)
        except NoduleJaxError as e:  # into study.log too; the entry point prints one line
            log.write(f"[study] stopped: {type(e).__name__}: {' '.join(str(e).split())}\n")
            raise


def _dispatch(study, stage: str):
    records = study.records(stages.STUDY_STAGES)
    redo = plan.check(study.config, records, study.workdir)
    for name in redo:  # upfront, so a killed redo resumes as a plain run
        study.clear(name, stages.STAGE_OUTPUTS[name])
    if stage == "study":  # a redone stage's previous time estimates its rest
        return _run_study(study, {n: r.get("seconds") for n, r in records.items()})
    if stage in stages.STAGES:
        _require(study, stage, stages.STAGE_INPUTS[stage])
        info = study.run_stage(stage, lambda: stages.STAGES[stage](study),
                               plan.marker_inputs(study.config, stage))
        print(f"[study] {stage}: {info['seconds']:.1f} s", flush=True)
        return info
    needs = {"fpr_augmented": ("pool",) if study.config.train.aug_source == "pool" else (),
             "fpr": ("fpr_seg",)}.get(stage, ())
    _require(study, stage, needs)
    return stages.run_single(study, stage)


def _require(study, stage: str, needed) -> None:
    for need in needed:
        if not study.done(need):
            raise ConfigError(
                f"config.stage={stage} needs the output of stage {need!r} "
                f"({study.workdir}/stages/{need}.json is missing); make it with "
                f"`python train.py --config CONFIG --workdir {study.workdir} "
                f"--config.stage={need}` or run the whole study (no --config.stage)")


def _run_study(study, previous: dict) -> dict:
    config, names = study.config, stages.STUDY_STAGES
    stages.finetune_seeds(config)  # a bad value is refused before any stage runs
    fps = plan.fingerprints(config)
    clock = _Clock(config, previous)
    out, n = {}, len(names)
    for k, name in enumerate(names, 1):
        head = f"[study] {k}/{n} {name}"
        if study.done(name):
            out[name] = study.record(name)
            print(f"{head}: done earlier ({out[name].get('seconds', 0.0):.1f} s), skipped",
                  flush=True)
            continue
        print(f"{head}: start (elapsed {clock.elapsed()}, rest {clock.rest(names[k - 1:])})",
              flush=True)
        out[name] = study.run_stage(name, lambda n_=name: stages.STAGES[n_](study),
                                    plan.marker_inputs(config, name, fps))
        clock.measured[name] = out[name]["seconds"]
        memory.release_freed()  # what the stage's compilations freed (runtime.memory)
        print(f"{head}: done in {_hms(out[name]['seconds'])} (elapsed {clock.elapsed()}, "
              f"rest {clock.rest(names[k:])})", flush=True)
    return out


def stage_units(config, stage: str) -> float:
    """The training steps a stage runs (config step counts; 0 for stages without steps)."""
    c = config
    rows = [r for r in stages.AUGMENTED if not tuple(c.train.rows) or r in tuple(c.train.rows)]
    return float({
        "cg": c.cg.steps + c.cg.ggo_steps + c.cg.rpn_steps,
        "fpr_seg": c.fpr.seg_pretrain_steps,
        "fpr": 2 * c.fpr.steps + c.fpr.finetune_steps,
        "synth": c.synth.steps * (1 + c.synth.n_critic),
        "augmented": len(rows) * c.fpr.finetune_steps * stages.finetune_seeds(c),
    }.get(stage, 0))


class _Clock:
    """Elapsed time and an estimate of the rest: a stage's time in a previous run, or its
    step count times the seconds per step measured on this run's training stages."""

    def __init__(self, config, previous: dict):
        self.config, self.previous, self.measured = config, previous, {}
        self.t0 = time.time()

    def elapsed(self) -> str:
        return _hms(time.time() - self.t0)

    def _estimate(self, stage):
        if self.previous.get(stage):
            return float(self.previous[stage])
        timed = [s for s in self.measured if stage_units(self.config, s) > 0]
        units = stage_units(self.config, stage)
        if units and timed:
            rate = sum(self.measured[s] for s in timed) / sum(
                stage_units(self.config, s) for s in timed)
            return units * rate
        return None

    def rest(self, remaining) -> str:
        est = [self._estimate(s) for s in remaining]
        known = sum(e for e in est if e is not None)
        unknown = sum(e is None for e in est)
        if not remaining:
            return "0:00:00"
        if unknown == len(remaining):
            return f"unknown ({unknown} stage(s) not yet timed)"
        return f"~{_hms(known)}" + (f" + {unknown} stage(s) not yet timed" if unknown else "")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Tee:
    """A console stream that also appends to the study log (progress bars left out)."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text):
        n = self._stream.write(text)
        if "\r" not in text and not self._log.closed:
            self._log.write(text)
            self._log.flush()
        return n

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def console_log(path: str):
    """Copy ``sys.stdout`` / ``sys.stderr`` into ``path`` (appended) while the block runs."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out, err = sys.stdout, sys.stderr
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield log
        finally:
            sys.stdout, sys.stderr = out, err
