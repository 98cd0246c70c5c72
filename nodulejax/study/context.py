"""The state of one study run: its folder, stage markers, dataset and prepared scans.

``Study(config, workdir)`` is what every stage function (:mod:`nodulejax.study.stages`)
receives. ``run_stage(name, fn)`` runs ``fn`` unless ``WORKDIR/stages/<name>.json`` exists and
writes that marker (atomically, with the stage's wall time) when ``fn`` returns.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import logging

from nodulejax.data.luna16 import Luna16Dataset
from nodulejax.data.prepare import data_root, prepare_split
from nodulejax.errors import WorkdirError
from nodulejax.runtime.files import atomic_write_json

__all__ = ["Study"]


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
        """Run ``fn`` unless ``stage`` is marked done; then write its marker atomically. An
        OSError of the stage or of its marker (disk full, read-only folder) becomes WorkdirError
        naming the stage and the file, and no marker is written: a re-run resumes the stage
        (from its checkpoints)."""
        if self.done(stage):
            logging.info("stage %s: done earlier, skipped", stage)
            return self.record(stage)
        logging.info("stage %s: starting", stage)
        t0 = time.time()
        try:
            info = fn() or {}
            info["seconds"] = round(time.time() - t0, 2)
            atomic_write_json(self._marker(stage), info, indent=1, default=_json_default)
        except OSError as e:
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
        return data_root(self.config, self.workdir)

    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = Luna16Dataset(self.data_root)
        return self._dataset

    def scans(self, split: str):
        """Prepared scans of ``split`` in {"train", "val", "test"} (cached in WORKDIR/cache)."""
        if split not in self._scans:
            self._scans[split] = prepare_split(self.config, self.workdir, split, self.dataset)
        return self._scans[split]


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
