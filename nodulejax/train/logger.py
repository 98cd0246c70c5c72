"""Training logs: tqdm progress bar, TensorBoard scalars and ``metrics.jsonl``.

Files, one folder per model (``WORKDIR/logs/<model_name>/`` by default):

* ``events.out.tfevents.*``: TensorBoard scalars ``train/<name>`` (losses, ``lr``,
  ``steps_per_sec``, ``examples_per_sec``) and ``val/<name>`` (validation metrics);
  view with ``tensorboard --logdir WORKDIR/logs``.
* ``metrics.jsonl``: one JSON object per line, ``{"step": s, "split": "train"|"val",
  "time": unix_seconds, <name>: value, ...}``. On resume from step ``s`` the lines with a
  step after ``s`` (written by the killed run after its last checkpoint) are dropped, so
  the file reads as one uninterrupted run.

Only process 0 writes (multi-host runs).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax
import tqdm

from nodulejax.runtime.files import atomic_write_text


def truncate_jsonl(path: str, max_step: int) -> None:
    """Drop records with ``step > max_step`` (atomic rewrite)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if int(rec.get("step", 0)) <= max_step:
                keep.append(json.dumps(rec))
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _clean(scalars: Mapping) -> dict:
    out = {}
    for k, v in scalars.items():
        v = float(v)
        out[k] = v if math.isfinite(v) else repr(v)  # JSON has no nan/inf
    return out


class MetricLogger:
    """Progress bar + TensorBoard + jsonl for one training run.

    Args:
      logdir: output folder.
      total_steps, start_step: for the progress bar (throughput, ETA).
      progress: show the tqdm bar.
    """

    def __init__(self, logdir: str, *, total_steps: int, start_step: int = 0,
                 progress: bool = True, desc: str | None = None):
        self.enabled = jax.process_index() == 0
        self.logdir = logdir
        self.jsonl = os.path.join(logdir, "metrics.jsonl")
        self._tb = None
        self._bar = None
        if not self.enabled:
            return
        os.makedirs(logdir, exist_ok=True)
        truncate_jsonl(self.jsonl, start_step)
        self._file = open(self.jsonl, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(logdir, flush_secs=30)
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                              desc=desc, dynamic_ncols=True, disable=not progress,
                              smoothing=0.1)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def write(self, step: int, scalars: Mapping, split: str = "train") -> None:
        if not self.enabled or not scalars:
            return
        vals = _clean(scalars)
        for k, v in vals.items():
            if isinstance(v, float):
                self._tb.add_scalar(f"{split}/{k}", v, step)
        self._file.write(json.dumps({"step": int(step), "split": split,
                                     "time": round(time.time(), 3), **vals}) + "\n")
        self._file.flush()
        if self._bar is not None:
            shown = {k: v for k, v in vals.items() if k not in ("examples_per_sec",)}
            short = {f"{'' if split == 'train' else split + '_'}{k}":
                     (f"{v:.4g}" if isinstance(v, float) else v) for k, v in shown.items()}
            self._bar.set_postfix(short, refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if not self._file.closed:
            self._file.close()
