"""End-to-end smoke test of the main job: the whole study on the tiny config.

Runs ``train.py --config configs/tiny.py`` (every stage, a few steps each) in a subprocess once,
checks the report and its sections and the ``[study] k/N`` progress lines, then re-runs it:
unchanged (every stage skipped, one line each), with a changed field (refused, naming it) and
with ``--config.rerun`` (that stage and its downstream stages redone).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from nodulejax.runtime import devices

pytestmark = pytest.mark.slow  # the whole tiny study in a subprocess: minutes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ("data", "prepare", "cg", "fpr_seg", "fpr", "synth", "pool", "augmented", "detect",
          "evaluate", "stress", "figures", "toy", "claims", "report")


def _run(workdir, timeout, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config",
           os.path.join(ROOT, "configs", "tiny.py"), "--workdir", str(workdir),
           "--config.train.progress=False", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("study")
    t0 = time.time()
    r = _run(wd, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return wd, time.time() - t0, r.stdout + r.stderr


def _study_lines(stdout):
    return [ln for ln in stdout.splitlines() if re.match(r"\[study\] \d+/\d+ ", ln)]


def test_every_stage_finishes_and_the_report_has_every_section(study_run):
    wd, _, _ = study_run
    for s in STAGES:
        assert os.path.exists(os.path.join(wd, "stages", f"{s}.json")), s
    report = open(os.path.join(wd, "report", "report.md"), encoding="utf-8").read()
    for section in ("Table 2", "Table 3", "Table 4", "Table 5", "Table 6", "Fig. 7", "Fig. 8",
                    "Fig. 6", "Fig. 9", "claims hold", "Environment", "Config",
                    "Deviations from the paper", "white-box", "robustness_curves.png"):
        assert section in report, section
    assert f"CPU: {devices.host_cpu()}" in report  # what decides whether two runs agree to the bit
    for png in ("scan_summary.png", "toy.png", "fig8_real_vs_synthetic.png",
                "fig6_perturbations.png", "fig9_noise_levels.png"):
        assert os.path.getsize(os.path.join(wd, "report", png)) > 1000, png
    froc = json.load(open(os.path.join(wd, "eval", "froc", "beta+syn", "froc.json")))
    assert 0.0 <= froc["cpm"] <= 1.0 and froc["n_scans"] == 2
    # tiny: eval.min_diameter_mm = 0, so the FROC counts every included test nodule
    prepared = json.load(open(os.path.join(wd, "stages", "prepare.json")))
    assert froc["min_diameter_mm"] == 0.0
    assert froc["n_nodules"] == prepared["test"]["nodules"]
    # one LUNA16 submission per trained FPR model, in world millimetres
    preds = os.listdir(os.path.join(wd, "eval", "predictions"))
    assert {"baseline-ce.csv", "baseline-beta-finetune.csv", "beta+syn.csv"} <= set(preds)


def test_claims_json_lists_every_claim_with_the_schema(study_run):
    wd, _, _ = study_run
    claims = json.load(open(os.path.join(wd, "report", "claims.json")))
    keys = {"table", "claim", "statistic", "estimate", "ci", "n", "threshold", "side",
            "verdict"}
    assert len(claims) >= 27
    assert {c["table"] for c in claims} >= {"Table 3", "Table 4", "Table 5", "Table 6"}
    for c in claims:
        assert keys <= set(c), c
        assert c["side"] in ("greater", "less")
        assert c["verdict"] in ("holds", "contradicted", "inconclusive", "not run")
        if c["table"] != "Table 3":
            assert c["protocol"] in ("transfer", "white-box")
        if c["verdict"] == "not run":
            assert c["ci"] is None and c["reason"]
        else:
            lo, hi = c["ci"]
            assert lo <= hi and c["n"] > 0
    # the tiny config trains beta+syn and the baselines: their Table 3 claim is decided
    syn = [c for c in claims if c["statistic"] == "CPM(beta+syn) - CPM(baseline-beta-finetune)"]
    assert len(syn) == 1 and syn[0]["verdict"] != "not run" and syn[0]["n_scans"] == 2
    report = open(os.path.join(wd, "report", "report.md"), encoding="utf-8").read()
    assert syn[0]["statistic"] in report


def test_progress_lines_name_each_stage_k_of_n_in_order(study_run):
    wd, _, stdout = study_run
    lines = _study_lines(stdout)
    n = len(STAGES)
    want = [f"[study] {k}/{n} {s}: {w}" for k, s in enumerate(STAGES, 1)
            for w in ("start", "done in")]
    assert [ln[: len(w)] for ln, w in zip(lines, want, strict=True)] == want
    assert all("elapsed 0:" in ln and "rest " in ln for ln in lines)
    # after the first training stage the rest has an estimate from the config's step counts
    assert "rest ~0:" in lines[2 * STAGES.index("cg") + 1]
    log = open(os.path.join(wd, "study.log"), encoding="utf-8").read()
    assert all(ln in log for ln in lines)  # the console is kept in the workdir
    assert "Metadata file does not exist" not in stdout  # Orbax restore notes filtered
    assert "read only" not in stdout


def test_rerun_skips_finished_stages_one_line_each(study_run):
    wd, first, _ = study_run
    t0 = time.time()
    r = _run(wd, 600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = _study_lines(r.stdout)
    assert lines == [ln for ln in lines if "done earlier" in ln and ln.endswith("skipped")]
    assert [ln.split()[2].rstrip(":") for ln in lines] == list(STAGES)
    assert time.time() - t0 < first


def test_rerun_with_a_changed_field_refuses_naming_it(study_run):
    wd, _, _ = study_run
    r = _run(wd, 600, "--config.toy.mlp_steps=60")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-3000:]
    assert "toy.mlp_steps (50 -> 60)" in r.stderr and "invalidates toy, report" in r.stderr
    assert "--config.rerun=toy" in r.stderr and "Traceback" not in r.stderr


def test_a_single_stage_without_its_input_names_it(tmp_path):
    r = _run(tmp_path, 300, "--config.stage=augmented")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-3000:]
    assert "stage 'pool'" in r.stderr and "--config.stage=pool" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_config_field_is_named_without_a_traceback(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config",
           os.path.join(ROOT, "configs", "tiny.py"), "--workdir", str(tmp_path),
           "--config.data.kind=dicomx"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
                       errors="replace", timeout=300)
    assert r.returncode != 0
    assert "config.data.kind" in r.stderr and "Traceback" not in r.stderr


def test_bad_finetune_seeds_are_refused_before_any_stage_runs(tmp_path):
    for bad in ("0", "True", "1.5"):
        r = _run(tmp_path / bad, 300, f"--config.train.finetune_seeds={bad}")
        assert r.returncode != 0 and "config.train.finetune_seeds" in r.stderr, r.stderr[-500:]
        assert "Traceback" not in r.stderr
        assert not os.path.exists(tmp_path / bad / "stages" / "data.json")  # nothing ran


def test_rerun_redoes_the_stage_and_its_downstream_stages(study_run):
    """Last: it changes the study's toy stage for good."""
    wd, _, _ = study_run
    before = json.load(open(os.path.join(wd, "stages", "cg.json")))
    r = _run(wd, 900, "--config.toy.mlp_steps=60", "--config.rerun=toy")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = _study_lines(r.stdout)
    ran = [ln.split()[2].rstrip(":") for ln in lines if ": start" in ln]
    assert ran == ["toy", "report"]
    assert sum("skipped" in ln for ln in lines) == len(STAGES) - 2
    toy = json.load(open(os.path.join(wd, "stages", "toy.json")))
    assert toy["_inputs"]["fields"]["toy.mlp_steps"] == 60
    assert json.load(open(os.path.join(wd, "stages", "cg.json"))) == before
    r = _run(wd, 600, "--config.toy.mlp_steps=60")  # now the recorded config: all skipped
    assert r.returncode == 0 and all("skipped" in ln for ln in _study_lines(r.stdout))
