"""Phantom nodule density (``data.phantom.nodules_per_scan``): the expected consensus count per
scan is the option's value (Poisson), 0 keeps the built-in distribution (mean 1.83), the
diameters keep the LUNA16 distribution (KS against the real annotations.csv), and a generated
dataset carries the denser annotations."""

import csv
import os

import numpy as np
import pytest
from scipy import stats

from nodulejax.data.phantom import nodules as pn
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.errors import ConfigError

REAL_ANN = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data",
                        "luna16", "annotations.csv")
if not os.path.exists(REAL_ANN):  # the checkout's sibling shared/ (CI) or the workspace copy
    REAL_ANN = "/work/shared/data/luna16/annotations.csv"


def _consensus(rng, n_scans, density):
    counts, diam = [], []
    for _ in range(n_scans):
        f = [x for x in pn.sample_findings(rng, nodules_per_scan=density) if not x.excluded]
        counts.append(len(f))
        diam += [x.diameter_mm for x in f]
    return np.array(counts), np.array(diam)


def test_built_in_distribution_is_kept_at_density_zero():
    counts, _ = _consensus(np.random.default_rng(0), 3000, 0.0)
    assert pn.DEFAULT_NODULES_PER_SCAN == pytest.approx(1.83)
    assert counts.max() <= 5
    observed = np.bincount(counts, minlength=6)
    expected = np.array(pn.NODULE_COUNT_PROBS) * len(counts)
    assert stats.chisquare(observed, expected).pvalue > 0.001


@pytest.mark.parametrize("density", [1.34, 4.0, 8.0])
def test_density_sets_the_mean_count_per_scan(density):
    counts, _ = _consensus(np.random.default_rng(1), 3000, density)
    se = np.sqrt(density / len(counts))  # Poisson: variance = mean
    assert abs(counts.mean() - density) < 4 * se
    assert counts.var() == pytest.approx(density, rel=0.15)


def test_dense_phantom_keeps_the_luna16_diameters():
    if not os.path.exists(REAL_ANN):
        pytest.skip(f"{REAL_ANN} not present")
    with open(REAL_ANN, newline="") as f:
        real = np.array([float(r["diameter_mm"]) for r in csv.DictReader(f)])
    _, gen = _consensus(np.random.default_rng(2), 300, 6.0)
    assert len(gen) > 1500
    assert stats.ks_2samp(gen, real).pvalue > 0.01
    assert stats.ks_2samp(gen * 1.15, real).pvalue < 0.01  # the test can fail


def test_generated_dataset_has_the_denser_annotations(tmp_path):
    kw = dict(num_subsets=2, size_scale=0.35, max_voxels=300_000)
    base = generate_dataset(str(tmp_path / "a"), 3, seed=5, **kw)
    dense = generate_dataset(str(tmp_path / "b"), 3, seed=5, nodules_per_scan=8.0, **kw)
    assert dense["num_nodules"] > base["num_nodules"]
    assert dense["num_nodules"] >= 12  # Poisson(24) falls below 12 with probability < 0.003
    with open(tmp_path / "b" / "annotations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == dense["num_nodules"]
    assert all(float(r["diameter_mm"]) >= 3.0 for r in rows)
    with pytest.raises(ConfigError, match="nodules_per_scan"):
        generate_dataset(str(tmp_path / "c"), 1, seed=5, nodules_per_scan=-1.0, **kw)
