"""study/stages.py: the study's stage order and the single-stage entry's errors (the stages
themselves run end to end in test_runner.py on the tiny config)."""

import os

import pytest

from nodulejax.errors import ConfigError
from nodulejax.runtime.config_tools import load_config
from nodulejax.study import stages
from nodulejax.study.context import Study

TINY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.py")


def test_the_study_runs_the_paper_in_order():
    order = stages.STUDY_STAGES
    assert order[0] == "data" and order[-1] == "report" and order[-2] == "claims"
    before = [("prepare", "cg"), ("fpr_seg", "fpr"), ("fpr", "pool"), ("synth", "pool"),
              ("pool", "augmented"), ("augmented", "detect"), ("detect", "evaluate"),
              ("augmented", "stress"), ("evaluate", "claims"), ("stress", "claims")]
    for a, b in before:
        assert order.index(a) < order.index(b), (a, b)
    assert not set(stages.SINGLE_STAGES) & set(order)


def test_an_unknown_single_stage_names_the_nearest(tmp_path):
    study = Study(load_config(TINY), str(tmp_path))
    with pytest.raises(ConfigError, match=r"config.stage: unknown stage 'fpr_augmentd'.*"
                                          r"nearest: fpr_augmented"):
        stages.run_single(study, "fpr_augmentd")


def test_bad_data_kind_or_missing_luna16_root_is_a_config_error(tmp_path):
    study = Study(load_config(TINY), str(tmp_path))
    study.config.data.kind = "dicom"
    with pytest.raises(ConfigError, match="config.data.kind"):
        stages.stage_data(study)
    study.config.data.kind, study.config.data.root = "luna16", ""
    with pytest.raises(ConfigError, match="config.data.root"):
        stages.stage_data(study)


def test_the_data_stage_passes_the_phantom_shapes(tmp_path):
    study = Study(load_config(TINY), str(tmp_path))
    p = study.config.data.phantom
    assert p.shapes == "lidc"  # the demo's default, which tiny inherits
    p.num_scans, p.size_scale, p.max_voxels, p.nodules_per_scan = 1, 0.3, 100_000, 4.0
    summary = stages.stage_data(study)
    assert summary["shapes"] == "lidc" and summary["num_scans"] == 1
    with open(os.path.join(study.data_root, "nodules.csv")) as f:
        assert "lidc:" in f.read()
    p.shapes = "voxels"
    with pytest.raises(ConfigError, match="config.data.phantom.shapes"):
        stages.stage_data(study)
