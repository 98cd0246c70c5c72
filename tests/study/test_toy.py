"""End-to-end test of the two-moons toy experiment (nodulejax.study.toy, paper Fig. 7)."""

import json
import os

import numpy as np
import pytest

from nodulejax.study import toy

pytestmark = pytest.mark.slow  # the two-moons experiment end to end: ~20 s


def test_make_moons_layout():
    x, y, t = toy.make_moons(500, 0.0, np.random.default_rng(0))
    assert x.shape == (1000, 2) and (y == 1).sum() == 500
    np.testing.assert_allclose(np.linalg.norm(x[y == 0], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(x[y == 1] - [1.0, 0.5], axis=1), 1.0, atol=1e-6)
    idx = toy.long_tail_subsample(t[y == 1], 20, np.random.default_rng(0))
    assert len(set(idx.tolist())) == 20 and np.median(t[y == 1][idx]) < np.pi / 2


def test_toy_runs_and_noise_negatives_close_the_boundary(tmp_path):
    r = toy.run_toy(str(tmp_path), 0, mlp_steps=400, vae_steps=400, plot=True)
    assert os.path.getsize(tmp_path / "toy.png") > 10_000
    with open(tmp_path / "toy.json", encoding="utf-8") as f:
        j = json.load(f)
    assert set(j["panels"]) == set("abcdef")
    p = j["panels"]
    assert p["a"]["accuracy_full"] > 0.95
    # Fig. 7d: 20 uniform-noise negatives shrink the positive area relative to (c)
    assert p["d"]["pos_area_fraction"] < p["c"]["pos_area_fraction"]
    assert p["d"]["ood_pos_fraction"] < p["c"]["ood_pos_fraction"]
    assert r["synthetic"]["baseline_prob_pgd_mean"] <= r["synthetic"]["baseline_prob_random_mean"]
