"""Peak host memory of each study stage against the number of scans (issue 29, item 4).

    python benchmarks/memory_scale.py --scans 4,8 [--size-scale 1.0] [--spacing 0.625]
        [--max-voxels 200000000] [--stages data,prepare,cg,fpr_seg,fpr,synth,pool,augmented,detect]
        [--out benchmarks/results] [--keep DIR] [--root CHECKOUT] [--tag old]

For each N of ``--scans``: a phantom of N scans at LUNA16 size (``size_scale`` 1.0: the adult
chest; ``--max-voxels`` high enough that no scan is coarsened; prepared at the paper's
0.625 mm) and the tiny config's networks and step counts (``configs/tiny.py``: the stages'
data paths at full size, their training kept short), folds 0-1 train, 2 validation, 3 test
(``num_subsets`` 4, so N must be a multiple of 4). Each stage runs in its own process,
``train.py --config configs/tiny.py --config.stage=STAGE ...`` on one run folder, and is
measured by ``os.wait4``: the peak resident memory (``ru_maxrss``) of the stage's process
and of the worker processes it waited for, and its wall time. A stage whose memory does not
depend on the dataset has the same peak at N and 2N; one that holds a split's scans or patch
sets in RAM grows with N.

``--root`` runs the stages of another checkout (e.g. a ``git worktree`` of the code before
issue 29, to give the old curve) with this script's measurement; ``--tag`` names its JSON.

Writes ``memory_scale_<date>[_<tag>].json`` (per N and stage: peak MB, seconds, the phantom's mean
scan shape) with the machine, versions and commit, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from common import run_record, write_result  # noqa: E402

STAGES = ("data", "prepare", "cg", "fpr_seg", "fpr", "synth", "pool", "augmented", "detect")


def overrides(n: int, a) -> list[str]:
    """The tiny config's flags for a LUNA16-sized phantom of ``n`` scans."""
    return [f"--config.data.phantom.num_scans={n}", "--config.data.phantom.num_subsets=4",
            f"--config.data.phantom.size_scale={a.size_scale}",
            f"--config.data.phantom.max_voxels={a.max_voxels}",
            "--config.data.phantom.shapes=lidc",  # the tiny config's (explicit for --root)
            f"--config.data.spacing={a.spacing}", "--config.data.train_folds=(0, 1)",
            "--config.data.val_folds=(2,)", "--config.data.test_folds=(3,)",
            "--config.data.num_workers=1", "--config.train.progress=False"]


def run_stage(stage: str, workdir: str, flags: list[str], root: str = ROOT) -> dict:
    """One stage of the checkout at ``root`` in its own process: ``{"peak_mb", "seconds",
    "rc"}``."""
    cmd = [sys.executable, os.path.join(root, "train.py"), "--config",
           os.path.join(root, "configs", "tiny.py"), "--workdir", workdir,
           f"--config.stage={stage}", *flags]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    out = {"peak_mb": round(usage.ru_maxrss / 1024, 1),
           "seconds": round(time.perf_counter() - t0, 1), "rc": rc}
    if rc != 0:
        out["error"] = err[-2000:]
    return out


def mean_shape(workdir: str) -> dict | None:
    """The prepared scans' mean (Z, Y, X) per split, from the prepare stage's output."""
    path = os.path.join(workdir, "stages", "prepare.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        out = json.load(f)
    out = out.get("outputs", out)
    return {k: v["mean_shape"] for k, v in out.items()
            if isinstance(v, dict) and "mean_shape" in v} or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", default="4,8")
    ap.add_argument("--size-scale", type=float, default=1.0)
    ap.add_argument("--spacing", type=float, default=0.625)
    ap.add_argument("--max-voxels", type=int, default=200_000_000)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--keep", default=None, help="keep the run folders under this folder")
    ap.add_argument("--root", default=ROOT, help="the checkout whose stages run")
    ap.add_argument("--tag", default="", help="suffix of the JSON's name")
    a = ap.parse_args(argv)
    ns = [int(v) for v in a.scans.split(",")]
    if any(n % 4 for n in ns):
        ap.error("--scans: every N must be a multiple of 4 (4 folds)")
    stages = a.stages.split(",")
    base = a.keep or tempfile.mkdtemp(prefix="memory_scale_")
    results = {}
    try:
        for n in ns:
            workdir = os.path.join(base, f"n{n}")
            results[n] = {}
            for stage in stages:
                r = run_stage(stage, workdir, overrides(n, a), os.path.abspath(a.root))
                results[n][stage] = r
                print(f"N={n:3d} {stage:8s} peak {r['peak_mb']:8.1f} MB  {r['seconds']:7.1f} s"
                      + ("" if r["rc"] == 0 else f"  FAILED rc={r['rc']}"), flush=True)
                if r["rc"] != 0:
                    print(r["error"], file=sys.stderr)
                    break
            results[n]["mean_shape"] = mean_shape(workdir)
    finally:
        if a.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    path = write_result(a.out, run_record("memory_scale", a, os.path.abspath(a.root),
                                          results={str(k): v for k, v in results.items()}),
                        a.tag)
    print(json.dumps({"written": path}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
