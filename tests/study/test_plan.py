"""Stage fingerprints (nodulejax.study.plan): a changed field invalidates its stage and every
stage downstream, rerun names what to redo, a stale marker refuses in one line."""

import os

import pytest

from nodulejax.errors import ConfigError
from nodulejax.runtime.config_tools import load_config
from nodulejax.study import plan, stages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def config():
    return load_config(os.path.join(ROOT, "configs", "tiny.py"))


def _changed(config, **fields):
    c = config.copy_and_resolve_references()
    for path, value in fields.items():
        block, _, leaf = path.replace("__", ".").rpartition(".")
        node = c
        for part in block.split(".") if block else []:
            node = node[part]
        node[leaf] = value
    return c


def test_every_stage_has_fields_inputs_and_outputs():
    for table in (stages.STAGE_FIELDS, stages.STAGE_INPUTS, stages.STAGE_OUTPUTS):
        assert set(table) == set(stages.STUDY_STAGES)
    order = {s: i for i, s in enumerate(stages.STUDY_STAGES)}
    for s, inputs in stages.STAGE_INPUTS.items():
        assert all(order[i] < order[s] for i in inputs), s  # inputs run earlier


def test_each_stage_reads_its_own_fields(config):
    assert "cg.steps" in plan.stage_fields(config, "cg")
    assert "cg.num_candidates" not in plan.stage_fields(config, "cg")  # inference: detect
    assert "cg.num_candidates" in plan.stage_fields(config, "detect")
    assert "toy.mlp_steps" in plan.stage_fields(config, "toy")
    # where the nodule masks come from (LIDC-IDRI outlines or spheres) is the prepared scans'
    assert "data.lidc_masks" in plan.stage_fields(config, "prepare")
    assert "data.phantom.shapes" in plan.stage_fields(config, "data")
    # Table 5's positives are the benchmark nodules (>= eval.min_diameter_mm)
    assert "eval.min_diameter_mm" in plan.stage_fields(config, "stress")
    assert not any(k.startswith("train.progress") or k == "rerun"
                   for s in stages.STUDY_STAGES for k in plan.stage_fields(config, s))


def test_a_changed_field_changes_its_stage_and_downstream_only(config):
    before = plan.fingerprints(config)
    after = plan.fingerprints(_changed(config, cg__steps=10))
    changed = {s for s in before if before[s] != after[s]}
    assert changed == set(plan.downstream(["cg"])) == {"cg", "detect", "evaluate", "claims",
                                                        "report"}
    assert plan.fingerprints(config) == before  # a pure function of the config
    assert plan.fingerprints(_changed(config, train__progress=False)) == before


def test_rerun_adds_downstream_and_rejects_unknown_names(config):
    assert plan.rerun_stages(_changed(config, rerun="toy")) == ("toy", "report")
    assert plan.rerun_stages(_changed(config, rerun="")) == ()
    with pytest.raises(ConfigError, match="config.rerun: unknown stage 'cgg'; nearest: cg"):
        plan.rerun_stages(_changed(config, rerun="cgg"))


def test_check_refuses_a_stale_marker_naming_fields_and_stages(config):
    records = {s: {"_inputs": plan.marker_inputs(config, s)} for s in stages.STUDY_STAGES}
    assert plan.check(config, records, "W") == ()
    new = _changed(config, cg__steps=10)
    with pytest.raises(ConfigError) as e:
        plan.check(new, records, "W")
    msg = str(e.value)
    assert "\n" not in msg and "cg.steps (4 -> 10)" in msg
    assert "invalidates cg, detect, evaluate, claims, report" in msg and "--config.rerun=cg" in msg
    redo = plan.check(_changed(new, rerun="cg"), records, "W")
    assert redo == ("cg", "detect", "evaluate", "claims", "report")
    legacy = {s: {"seconds": 1.0} for s in stages.STUDY_STAGES}  # markers without inputs
    assert plan.check(new, legacy, "W") == ()


def test_an_added_field_at_its_old_behaviour_keeps_older_run_folders_current(config):
    """``fpr.infer_batch_size`` came after run folders were recorded: at 0 (score in
    ``fpr.batch_size`` batches, as before) a config without the field and one with it have
    the same fingerprints; another value invalidates detection and what follows it, not the
    FPR training."""
    without = config.copy_and_resolve_references()
    with without.unlocked():
        del without.fpr["infer_batch_size"]
    assert plan.fingerprints(without) == plan.fingerprints(config)
    before, after = plan.fingerprints(config), plan.fingerprints(
        _changed(config, fpr__infer_batch_size=2))
    assert {s for s in before if before[s] != after[s]} == {"detect", "evaluate", "claims",
                                                            "report"}
