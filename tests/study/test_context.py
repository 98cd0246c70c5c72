"""study/context.py: the run folder's stage markers (skip, record, clear) and what a stage's
OSError becomes (WorkdirError naming the stage and file, no marker)."""

import json
import os

import numpy as np
import pytest

from nodulejax.errors import WorkdirError
from nodulejax.runtime.config_tools import load_config
from nodulejax.study.context import Study

TINY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.py")


@pytest.fixture
def study(tmp_path):
    return Study(load_config(TINY), str(tmp_path / "run"))


def test_run_stage_runs_once_and_records_time_inputs_and_numpy_values(study):
    calls = []

    def fn():
        calls.append(1)
        return {"auc": np.float32(0.5), "counts": np.arange(3)}

    info = study.run_stage("cg", fn, inputs={"fields": "abc"})
    assert calls == [1] and study.done("cg")
    with open(os.path.join(study.workdir, "stages", "cg.json")) as f:
        marker = json.load(f)
    assert marker["auc"] == 0.5 and marker["counts"] == [0, 1, 2]
    assert marker["_inputs"] == {"fields": "abc"} and marker["seconds"] >= 0
    assert info["seconds"] == marker["seconds"]
    again = study.run_stage("cg", fn)  # finished: skipped, its marker returned
    assert calls == [1] and again == marker
    assert list(study.records(["fpr", "cg", "data"])) == ["cg"]


def test_an_oserror_is_a_workdir_error_naming_the_stage_and_leaves_no_marker(study):
    def fn():
        raise OSError(28, "No space left on device", os.path.join(study.workdir, "x.bin"))

    with pytest.raises(WorkdirError, match=r"stage synth: .*x\.bin.*No space left"):
        study.run_stage("synth", fn)
    assert not study.done("synth")


def test_clear_removes_the_marker_and_outputs_but_not_an_external_dataset(study, tmp_path):
    out = os.path.join(study.workdir, "eval", "froc")
    os.makedirs(out)
    open(os.path.join(study.workdir, "report.md"), "w").close()
    study.run_stage("evaluate", dict)
    study.clear("evaluate", ["eval/froc", "report.md", "missing/path"])
    assert not study.done("evaluate") and not os.path.exists(out)
    assert not os.path.exists(os.path.join(study.workdir, "report.md"))
    external = tmp_path / "luna16"
    external.mkdir()
    study.config.data.root = str(external)
    study.clear("data", ["data"])  # a user's LUNA16 folder is never removed
    assert external.is_dir() and study.data_root == str(external)


def test_data_root_defaults_to_the_run_folder(study):
    assert study.data_root == os.path.join(study.workdir, "data")
