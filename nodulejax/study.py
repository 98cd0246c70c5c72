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
  stress    Tables 4-6 (synthetic nodules, noise, PGD noise)                 (Section 5.3)
  figures   Figs. 5, 6, 8, 9: PGD-synthetic vs real nodules, perturbation examples
  toy       the two-moons experiment (Fig. 7)                                (Section 5.1)
  report    WORKDIR/report/report.md with its figures

Each finished stage writes ``WORKDIR/stages/<stage>.json`` (its wall time and outputs); a re-run
skips it. A stage killed midway resumes from its checkpoints (nodulejax.train.loop.fit). A
single stage can be run with ``--config.stage=NAME`` (its inputs must exist).
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import numpy as np
from absl import logging

from nodulejax.errors import ConfigError, WorkdirError

STUDY_STAGES = ("data", "prepare", "cg", "fpr_seg", "fpr", "synth", "pool", "augmented",
                "detect", "evaluate", "stress", "figures", "toy", "report")

class Study:
    """Holds the run folder, the dataset and prepared scans of one study."""

    def __init__(self, config, workdir: str):
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self._scans = {}
        self._dataset = None
        os.makedirs(os.path.join(self.workdir, "stages"), exist_ok=True)

    # ------------------------------------------------------------------ bookkeeping
    def _marker(self, stage):
        return os.path.join(self.workdir, "stages", f"{stage}.json")

    def done(self, stage) -> bool:
        return os.path.exists(self._marker(stage))

    def record(self, stage) -> dict:
        with open(self._marker(stage)) as f:
            return json.load(f)

    def run_stage(self, stage, fn):
        """Run ``fn`` unless ``stage`` is marked done; then write its marker atomically (a
        temporary file renamed). An OSError of the stage or of its marker (disk full,
        read-only folder) becomes WorkdirError naming the stage and the file, and no marker
        is written: a re-run resumes the stage (from its checkpoints)."""
        if self.done(stage):
            logging.info("stage %s: done earlier, skipped", stage)
            return self.record(stage)
        logging.info("stage %s: starting", stage)
        t0 = time.time()
        tmp = self._marker(stage) + ".tmp"
        try:
            info = fn() or {}
            info["seconds"] = round(time.time() - t0, 2)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(info, f, indent=1, default=_json_default)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._marker(stage))
        except OSError as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            where = e.filename or self.workdir
            raise WorkdirError(
                f"stage {stage}: cannot write or read {where}: {e.strerror or e} (disk full or a "
                "read-only folder?); the stage is not marked done: fix it and re-run the same "
                "command to resume") from e
        logging.info("stage %s: finished in %.1f s", stage, info["seconds"])
        print(f"[study] {stage}: {info['seconds']:.1f} s", flush=True)
        return info

    # ------------------------------------------------------------------ data
    @property
    def data_root(self) -> str:
        return self.config.data.root or os.path.join(self.workdir, "data")

    @property
    def dataset(self):
        if self._dataset is None:
            from nodulejax.data.luna16 import Luna16Dataset

            self._dataset = Luna16Dataset(self.data_root)
        return self._dataset

    def scans(self, split: str):
        """Prepared scans of ``split`` in {"train", "val", "test"} (cached on disk)."""
        if split not in self._scans:
            from nodulejax.data.prepare import prepare_folds

            folds = {"train": self.config.data.train_folds, "val": self.config.data.val_folds,
                     "test": self.config.data.test_folds}[split]
            self._scans[split] = prepare_folds(
                self.dataset, list(folds), spacing=float(self.config.data.spacing),
                window=tuple(self.config.data.hu_window),
                cache_dir=os.path.join(self.workdir, "cache"),
                workers=int(self.config.data.num_workers))
        return self._scans[split]

    def stage_data(self):
        d = self.config.data
        if d.kind == "luna16":
            if not d.root:
                raise ConfigError("config.data.root: a LUNA16 folder is needed when "
                                  "config.data.kind == 'luna16'")
            return {"root": d.root, "num_scans": len(self.dataset)}
        if d.kind != "phantom":
            raise ConfigError(f"config.data.kind: expected 'phantom' or 'luna16', got {d.kind!r}")
        from nodulejax.data import phantom

        p = d.phantom
        summary = phantom.generate_dataset(self.data_root, int(p.num_scans), int(p.seed),
                                           size_scale=float(p.size_scale),
                                           num_subsets=int(p.num_subsets),
                                           max_voxels=int(p.max_voxels),
                                           workers=int(d.num_workers))
        summary.pop("uids", None)
        return summary

    def stage_prepare(self):
        from nodulejax.data.phantom import plot_scan_summary

        info = {}
        for split in ("train", "val", "test"):
            scans = self.scans(split)
            n_nod = sum(len(s.nodules_zyx) for s in scans)
            types = {}
            for s in scans:
                for t in s.nodule_types:
                    types[t] = types.get(t, 0) + 1
            info[split] = {"scans": len(scans), "nodules": n_nod, "types": types,
                           "mean_shape": np.mean([s.image.shape for s in scans], 0).tolist()
                           if scans else None}
        report = os.path.join(self.workdir, "report")
        os.makedirs(report, exist_ok=True)
        uid = self.dataset.uids()[0]
        vol = self.dataset.load(uid)
        ann = self.dataset.annotations.for_uid(uid)
        rows = np.concatenate([ann.xyz, ann.diameter_mm[:, None]], 1) if len(ann) else []
        plot_scan_summary(vol, rows, os.path.join(report, "scan_summary.png"),
                          title=f"{uid} (native grid)")
        info["picture"] = "report/scan_summary.png"
        with open(os.path.join(report, "dataset.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        return info


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _stage_fns(study: Study) -> dict:
    from nodulejax import study_stages as ss

    return {
        "data": study.stage_data,
        "prepare": study.stage_prepare,
        "cg": lambda: ss.stage_cg(study),
        "fpr_seg": lambda: ss.stage_fpr_seg(study),
        "fpr": lambda: ss.stage_fpr_baselines(study),
        "synth": lambda: ss.stage_synth(study),
        "pool": lambda: ss.stage_pool(study),
        "augmented": lambda: ss.stage_augmented(study),
        "detect": lambda: ss.stage_detect(study),
        "evaluate": lambda: ss.stage_evaluate(study),
        "stress": lambda: ss.stage_stress(study),
        "figures": lambda: ss.stage_figures(study),
        "toy": lambda: ss.stage_toy(study),
        "report": lambda: ss.stage_report(study),
    }


def run(config, workdir: str) -> dict:
    """Run ``config.stage`` ("study" = every stage in order, skipping finished ones)."""
    study = Study(config, workdir)
    fns = _stage_fns(study)
    stage = config.stage
    if stage == "study":
        out = {}
        for name in STUDY_STAGES:
            out[name] = study.run_stage(name, fns[name])
        return out
    if stage in fns:
        return study.run_stage(stage, fns[stage])
    from nodulejax import study_stages as ss

    return ss.run_single(study, stage)
