"""Time and peak host memory of detecting nodules in one full-size scan (issue 29, item 5).

    python benchmarks/detect_scan.py --scan SCAN.mhd [--config configs/paper.py] [--spacing 0.625]
        [--repeats 2] [--out benchmarks/results] [--tag NAME]

Runs the user-scan path a person runs (``python -m nodulejax.detection detect``:
``detection.scan.detect_file`` -- read, prepare at ``--spacing``, whole-volume candidate
generation (both blob ResUNets and the RPN over sliding windows of the lung ROI), FPR scoring
of every candidate, the report's images) with the networks of ``--config`` (default
``configs/paper.py``: the paper's networks) at freshly initialised weights (``--seed``): the
work per scan is the same as with trained weights but for the number of RPN boxes and
candidates, which the JSON records. The first repeat includes XLA compilation; the later ones
are the steady state of a detector that has seen a scan. Each phase's seconds (read, prepare,
candidates, scoring; the rest is the report's images) are timed around the functions
``detect_file`` calls.

Peak memory is the process's RSS high-water mark (``VmHWM``: the whole run, so the largest
phase) and, per phase, the mark restarted at the phase's start; the JSON
(``detect_scan_<date>[_<tag>].json``) records it with the scan's shapes, the machine, versions
and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from common import load_config, peak_rss_mb, reset_peak_rss, run_record, status_mb, write_result  # noqa: E402


def untrained_model(config, seed: int):
    """A ``DetectorModel`` of ``config``'s networks at initial weights (threshold 0.5)."""
    import jax
    import jax.numpy as jnp

    from nodulejax.detection import detector as dt
    from nodulejax.detection.export import DetectorModel
    from nodulejax.models.build import cg_model, fpr_model, rpn_model
    from nodulejax.train.fpr import init_model

    win = dt.window_size(config)
    x = jnp.zeros((1, win, win, win, 1), jnp.float32)
    keys = jax.random.split(jax.random.key(seed), 3)
    init = {name: jax.jit(model.init)(k, x)["params"]
            for name, model, k in (("cg", cg_model(config), keys[0]),
                                   ("cg_ggo", cg_model(config), keys[1]),
                                   ("rpn", rpn_model(config), keys[2]))}
    fpr = init_model(fpr_model(config), seed, int(config.fpr.patch_size), task="cls")
    return DetectorModel(folder="(untrained)", config=config, cg_params=jax.device_get(init),
                         fpr_params=fpr, info={"threshold": {"value": 0.5,
                                                             "rule": "benchmark"}},
                         digest="")


def _timed(fn, phase: str, phases: dict, peaks: dict):
    """``fn`` adding its seconds to ``phases[phase]`` and its peak RSS (MB, the high-water
    mark restarted at its call) to ``peaks[phase]`` (the module attribute is replaced, so the
    detector's own calls are measured)."""

    def wrapped(*args, **kwargs):
        reset_peak_rss()
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - t0
            peaks[phase] = max(peaks.get(phase, 0.0), round(status_mb("VmHWM") or 0.0, 1))

    return wrapped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", required=True, help="a .mhd/.nii(.gz)/DICOM folder")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "paper.py"),
                    help="a config file (default configs/paper.py: the paper's networks and "
                         "0.625 mm) or a name of common.CONFIGS")
    ap.add_argument("--spacing", type=float, default=0.625)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--tag", default="")
    a = ap.parse_args(argv)


    from nodulejax.detection import detector as dt
    from nodulejax.detection import scan as ds

    config = load_config(a.config)
    with config.unlocked():
        config.data.spacing = a.spacing
    model = untrained_model(config, a.seed)
    phases: dict = {}
    peaks: dict = {}
    for mod, name, phase in ((ds, "read_scan", "read"), (ds, "prepare", "prepare"),
                             (dt, "generate_candidates", "candidates"),
                             (dt, "score_candidates", "scoring")):
        setattr(mod, name, _timed(getattr(mod, name), phase, phases, peaks))
    runs = []
    for r in range(a.repeats):
        phases.clear()
        peaks.clear()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = ds.detect_file(model, a.scan, os.path.join(tmp, "out"), progress=True)
            runs.append({"repeat": r, "seconds": round(time.perf_counter() - t0, 1),
                         "phases_s": {k: round(v, 1) for k, v in phases.items()},
                         "phases_peak_mb": dict(peaks),
                         "n_candidates": summary["n_candidates"],
                         "prepared_shape": summary["prepared_shape"],
                         "peak_mb_so_far": round(peak_rss_mb(), 1)})
        print(json.dumps(runs[-1]), flush=True)
    doc = run_record("detect_scan", a, scan_shape=summary["shape"],
                     window=int(config.cg.window_size or config.cg.input_size),
                     peak_mb=round(peak_rss_mb(), 1), runs=runs)
    path = write_result(a.out, doc, a.tag)
    print(json.dumps({"written": path, "peak_mb": doc["peak_mb"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
