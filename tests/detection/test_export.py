"""``python -m nodulejax.detection export``: one self-contained folder (params, the config
fields detection reads, version, digest, model.md with the run's CPM), loaded without the run
folder; an incomplete folder or a changed file is refused."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from nodulejax.detection import export
from nodulejax.detection.__main__ import main
from nodulejax.errors import CheckpointError
from tests.detection.conftest import FROC, FROC_THRESHOLD, ROW

pytestmark = pytest.mark.slow  # export + detect on a phantom and a DICOM series: ~25 s setup


def test_export_folder_holds_everything_detection_needs(own):
    m = own["model"]
    assert sorted(os.listdir(m)) == ["detector.json", "manifest.json", "model.md", "params"]
    assert sorted(os.listdir(os.path.join(m, "params"))) == ["cg", "cg_ggo", "fpr", "rpn"]
    info = json.load(open(os.path.join(m, "detector.json")))
    c = own["config"]
    assert info["version"] == export.package_version() != "unknown"
    assert info["fpr_model"] == f"fpr_{ROW}" and info["row"] == ROW
    cfg = info["config"]
    assert cfg["data"] == {"spacing": c.data.spacing, "hu_window": list(c.data.hu_window)}
    assert cfg["cg"]["num_candidates"] == c.cg.num_candidates
    assert cfg["cg"]["nms_radius_mm"] == c.cg.nms_radius_mm
    assert cfg["fpr"]["patch_size"] == c.fpr.patch_size and cfg["fpr"]["head"] == "beta"
    assert info["threshold"]["value"] == FROC_THRESHOLD and "1 FP/scan" in info["threshold"][
        "rule"]
    assert info["measured"]["cpm"] == FROC["cpm"]
    card = open(os.path.join(m, "model.md")).read()
    assert "CPM 0.432" in card and "phantom" in card and "train [0, 1, 2, 3, 4, 5, 6]" in card
    man = json.load(open(os.path.join(m, "manifest.json")))
    assert man["digest"] == export.digest_of(man["files"])
    assert {"detector.json", "model.md"} <= set(man["files"])


def test_loads_without_the_run_folder(own, tmp_path):
    copy = str(tmp_path / "elsewhere")
    shutil.copytree(own["model"], copy)
    away = own["workdir"] + ".away"
    os.rename(own["workdir"], away)
    try:
        model = export.load_model(copy)
    finally:
        os.rename(away, own["workdir"])
    for name in ("cg", "cg_ggo", "rpn"):
        jax.tree.map(np.testing.assert_array_equal, model.cg_params[name], own["params"][name])
    jax.tree.map(np.testing.assert_array_equal, model.fpr_params, own["params"][f"fpr_{ROW}"])
    assert model.config.fpr.head == "beta" and isinstance(model.config.cg.anchors_mm, tuple)
    assert model.threshold == FROC_THRESHOLD


@pytest.mark.parametrize("case", ["no_manifest", "missing_file", "changed_file", "extra_param",
                                  "edited_manifest"])
def test_incomplete_or_changed_folder_is_refused(own, tmp_path, case):
    m = str(tmp_path / "m")
    shutil.copytree(own["model"], m)
    man_path = os.path.join(m, "manifest.json")
    man = json.load(open(man_path))
    victim = sorted(k for k in man["files"] if k.startswith("params/rpn/"))[-1]
    if case == "no_manifest":
        os.remove(man_path)
    elif case == "missing_file":
        os.remove(os.path.join(m, victim))
    elif case == "changed_file":
        with open(os.path.join(m, victim), "ab") as f:
            f.write(b"\0")
    elif case == "extra_param":
        open(os.path.join(m, "params", "fpr", "stray"), "w").write("x")
    else:  # a file's hash edited to match a change: the digest of the list no longer does
        with open(os.path.join(m, "detector.json"), "a") as f:
            f.write(" ")
        man["files"]["detector.json"] = export._sha256(os.path.join(m, "detector.json"))
        json.dump(man, open(man_path, "w"))
    with pytest.raises(CheckpointError) as ei:
        export.load_model(m)
    msg = str(ei.value)
    assert m in msg
    assert ("incomplete" if case in ("no_manifest", "missing_file") else "digest mismatch") \
        in msg, msg


def test_froc_threshold_is_the_lowest_at_most_one_fp_per_scan():
    assert export.froc_threshold(FROC) == (FROC_THRESHOLD, 1.0, 0.5)
    assert export.froc_threshold({"curve": {"fps": [0, 1], "sensitivity": [0, 1]}}) is None
    assert export.froc_threshold(None) is None


def test_cli_errors_are_one_line(own, tmp_path, capsys):
    assert main(["export", "--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) \
        == 2
    assert main(["export", "--workdir", own["workdir"], "--out", own["model"]]) == 2
    assert main(["export", "--workdir", own["workdir"], "--out", str(tmp_path / "o"),
                 "--fpr-model", "baseline-cee"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in "".join(lines)
    assert "nope" in lines[0] and "--overwrite" in lines[1] and "baseline-ce" in lines[2]
    assert not os.path.exists(tmp_path / "o")


def test_cli_export_prints_digest_and_cpm(own, tmp_path, capsys):
    out = str(tmp_path / "m2")
    assert main(["export", "--workdir", own["workdir"], "--out", out, "--fpr-model", ROW]) == 0
    text = capsys.readouterr().out
    digest = json.load(open(os.path.join(out, "manifest.json")))["digest"]
    assert digest in text and "CPM 0.432" in text and "0.61" in text
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
