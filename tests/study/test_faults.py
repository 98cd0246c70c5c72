"""The whole study under faults: SIGKILL at a random moment, a full disk, a stage
output folder that cannot be written.

* Kill/resume: ``train.py --config configs/tiny.py`` is started, SIGKILLed (its whole process
  group, as a batch scheduler kills a job, so no data-generation worker outlives it) after a
  random delay, then re-run with the same command. Every result file of the resumed run must
  equal the uninterrupted reference run's, byte for byte, except wall-clock fields (JSON keys
  named in ``WALL_CLOCK``, with the pool's count of samples computed by the last call, the
  report's stage-time table); checkpoints and logs are not
  results (Orbax metadata and log lines carry times, and a resumed log repeats steps). The
  delay comes from a fresh seed each run, printed; ``NODULEJAX_KILL_SEED=<seed>`` replays one.
* Disk full: the ``data`` stage runs with ``RLIMIT_FSIZE`` at 1 MiB (set in the child before
  exec, with SIGXFSZ ignored, so a write past it fails with EFBIG as a full disk fails with
  ENOSPC). No privileges and no special mount are needed, so this works in CI and as root.
* Unwritable output folder: ``chmod`` does not stop root (CI runs as root), so the stage's
  output folder ``WORKDIR/data/subset3`` is made a regular FILE before the stage runs: creating
  it, or anything in it, fails with an OSError, as a read-only folder does.

In both fault cases the run must fail with one line naming the project's WorkdirError and
the stage (no traceback), leave no stage marker, and a re-run after the fault is removed must
finish the stage with the files of the reference run.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from nodulejax.study.stages import STUDY_STAGES

pytestmark = pytest.mark.slow  # the whole tiny study under faults: minutes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALL_CLOCK = {"seconds", "seconds_per_scan", "samples_per_s", "steps_per_sec",
              "examples_per_sec", "time", "wall_s",
              "samples_this_run"}  # what the resumed process computed, not what it produced
NOT_RESULTS = ("checkpoints", "logs")
_TIMING_ROW = re.compile(r"^\| [\w*+.-]+ \| [0-9.]+ \|$")


def _cmd(workdir, *extra):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--config",
            os.path.join(ROOT, "configs", "tiny.py"), "--workdir", str(workdir),
            "--config.train.progress=False", *extra]


def _run(workdir, *extra, timeout=2400, preexec_fn=None):
    return subprocess.run(_cmd(workdir, *extra), cwd=ROOT, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=timeout,
                          preexec_fn=preexec_fn)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny study: (workdir, seconds). ``NODULEJAX_FAULTS_REFERENCE=DIR``
    reuses a finished uninterrupted run of the same commit instead (to replay a seed
    quickly); its seconds are the sum of its stages' wall times."""
    given = os.environ.get("NODULEJAX_FAULTS_REFERENCE")
    if given:
        stages = [os.path.join(given, "stages", f) for f in os.listdir(
            os.path.join(given, "stages"))]
        assert len(stages) == len(STUDY_STAGES), f"{given} is not a finished study"
        return given, sum(json.load(open(f))["seconds"] for f in stages)
    wd = tmp_path_factory.mktemp("reference")
    t0 = time.time()
    r = _run(wd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return wd, time.time() - t0


def _results(workdir) -> dict[str, str]:
    """{relative path: absolute path} of every result file (checkpoints and logs aside)."""
    out = {}
    for dirpath, _, files in os.walk(workdir):
        rel_dir = os.path.relpath(dirpath, workdir)
        if rel_dir.split(os.sep)[0] in NOT_RESULTS:
            continue
        for f in files:
            if f.endswith(".log"):  # study.log: a console copy, repeated by a resume
                continue
            out[os.path.normpath(os.path.join(rel_dir, f))] = os.path.join(dirpath, f)
    return out


def _strip_wall_clock(obj):
    if isinstance(obj, dict):
        return {k: _strip_wall_clock(v) for k, v in obj.items() if k not in WALL_CLOCK}
    if isinstance(obj, list):
        return [_strip_wall_clock(v) for v in obj]
    return obj


def _content(path: str):
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            return _strip_wall_clock(json.load(f))
    if path.endswith(".md"):
        with open(path, encoding="utf-8") as f:
            return [ln for ln in f.read().splitlines() if not _TIMING_ROW.match(ln)]
    with open(path, "rb") as f:
        return f.read()


def assert_same_results(ref, got, under=""):
    a = {k: v for k, v in _results(ref).items() if k.startswith(under)}
    b = {k: v for k, v in _results(got).items() if k.startswith(under)}
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
    differ = [k for k in sorted(a) if _content(a[k]) != _content(b[k])]
    assert not differ, f"result files differ from the uninterrupted run: {differ}"


def _kill_seed() -> int:
    env = os.environ.get("NODULEJAX_KILL_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**31)


def test_sigkill_at_a_random_moment_then_resume_gives_the_same_results(reference, tmp_path):
    ref, ref_seconds = reference
    seed = _kill_seed()
    delay = random.Random(seed).uniform(3.0, 0.9 * ref_seconds)
    print(f"\nkill/resume: NODULEJAX_KILL_SEED={seed} -> SIGKILL after {delay:.1f} s "
          f"(reference run {ref_seconds:.0f} s)", flush=True)
    wd = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(wd), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    done = sorted(os.listdir(wd / "stages")) if (wd / "stages").is_dir() else []
    print(f"kill/resume: {'finished before the kill' if finished else 'killed'}; stages "
          f"done then: {done}", flush=True)
    r = _run(wd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert_same_results(ref, wd)


def _no_traceback_workdir_error(r, stage):
    assert r.returncode != 0
    assert "WorkdirError" in r.stderr and f"stage {stage}" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


def _limit_file_size(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_full_disk_is_a_clear_error_and_the_stage_resumes(reference, tmp_path):
    ref, _ = reference
    wd = tmp_path / "full"
    r = _run(wd, "--config.stage=data", timeout=600, preexec_fn=_limit_file_size(1 << 20))
    _no_traceback_workdir_error(r, "data")
    assert "File too large" in r.stderr, r.stderr[-2000:]
    assert not (wd / "stages" / "data.json").exists()
    assert not any(n.endswith(".tmp") for n in os.listdir(wd / "stages"))
    r = _run(wd, "--config.stage=data", timeout=600)  # the disk has room again
    assert r.returncode == 0, r.stderr[-3000:]
    assert (wd / "stages" / "data.json").exists()
    assert_same_results(ref, wd, under="data")


def test_unwritable_stage_output_is_a_clear_error_and_the_stage_resumes(reference, tmp_path):
    ref, _ = reference
    wd = tmp_path / "blocked"
    blocker = wd / "data" / "subset3"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder\n")
    r = _run(wd, "--config.stage=data", timeout=600)
    _no_traceback_workdir_error(r, "data")
    assert "subset3" in r.stderr, r.stderr[-2000:]
    assert not (wd / "stages" / "data.json").exists()
    blocker.unlink()  # the folder is writable again
    r = _run(wd, "--config.stage=data", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_results(ref, wd, under="data")
