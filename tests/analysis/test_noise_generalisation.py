"""The noise probe's arithmetic (analysis/noise_generalisation.py): how often a fine-tune
draws each pool noise patch, and the bootstrap mean."""

import os
import sys

import numpy as np

from configs import demo
from nodulejax.experiments import EXPERIMENTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
import noise_generalisation as probe  # noqa: E402


def test_draws_per_pool_patch_is_steps_times_the_noise_share_of_a_batch():
    c = demo.get_config()
    c.fpr.finetune_steps, c.fpr.batch_size = 60, 16
    # perturb rows: negatives 50% real / 50% adversarial, half of each batch negative
    row = EXPERIMENTS["beta+perturb"]
    assert probe.draws_per_pool_patch(c, row, 96) == 60 * 16 * 0.25 / 96
    c.train.neg_ratios = (0.75, 0.25)
    assert probe.draws_per_pool_patch(c, row, 96) == 60 * 16 * 0.125 / 96
    assert probe.draws_per_pool_patch(c, EXPERIMENTS["beta+syn"], 96) == 0.0


def test_mean_ci_brackets_the_mean_and_collapses_on_constant_scores():
    p = np.linspace(0.0, 1.0, 101)
    r = probe.mean_ci(p, 500)
    assert r["n"] == 101 and r["mean"] == 0.5
    assert r["ci"][0] < 0.5 < r["ci"][1] and r["ci"][1] - r["ci"][0] < 0.15
    assert probe.mean_ci(np.full(7, 0.25), 100) == {"mean": 0.25, "ci": [0.25, 0.25], "n": 7}


def test_radial_profile_finds_a_bright_centre_and_is_flat_on_a_flat_patch():
    x = np.full((2, 9, 9, 9), 0.5, np.float32)
    assert {d["mean"] for d in probe.radial_profile(x)} == {0.5}
    x[:, 3:6, 3:6, 3:6] = 1.0  # a 3^3 cube at the centre (radius <= sqrt(3) < 2)
    prof = probe.radial_profile(x)
    assert prof[0]["r"] == [0.0, 2.0] and prof[0]["mean"] == 1.0
    assert all(d["mean"] == 0.5 for d in prof[1:])


def test_an_unfinished_workdir_is_refused_naming_the_missing_stage_marker(tmp_path, capsys):
    cfg = os.path.join(ROOT, "configs", "tiny.py")
    rc = probe.main(["--config", cfg, "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and "WorkdirError" in err
    assert os.path.join(str(tmp_path), "stages", "fpr.json") in err and "'fpr' stage" in err
