"""The ranking probe's candidate labels (analysis/fpr_ranking.py): the LUNA16 hit rule,
small and excluded findings ignored, and the distance to the nearest candidate."""

import os
import sys
from types import SimpleNamespace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
import fpr_ranking as probe  # noqa: E402


def test_labels_follow_the_hit_rule_and_ignore_small_and_excluded_findings():
    scan = SimpleNamespace(  # 2 mm voxels; nodules of 8 mm (included) and 4 mm (too small)
        spacing=2.0, nodules_zyx=np.array([[10.0, 10, 10], [30, 30, 30]]),
        nodules_diam_mm=np.array([8.0, 4.0]), excluded_zyx=np.array([[50.0, 50, 50]]),
        excluded_diam_mm=np.array([-1.0]))  # unknown diameter: 10 mm
    zyx = np.array([[10.0, 10, 11.5],   # 3 mm from the 8 mm nodule: < 4 mm, a hit
                    [10.0, 10, 12.0],   # 4 mm: not strictly inside, a false positive
                    [30.0, 30, 30.5],   # hits only the 4 mm nodule: ignored
                    [50.0, 52, 50],     # 4 mm from the excluded finding (radius 5): ignored
                    [70.0, 70, 70]])    # nothing
    labels, offsets = probe.candidate_labels(scan, zyx, min_diameter_mm=6.0)
    assert labels.tolist() == [1, 0, -1, -1, 0]
    np.testing.assert_allclose(offsets, [3.0])
    labels, offsets = probe.candidate_labels(scan, zyx, min_diameter_mm=0.0)
    assert labels.tolist() == [1, 0, 1, -1, 0]  # both nodules included
    np.testing.assert_allclose(sorted(offsets), [1.0, 3.0])


def test_outside_fraction_counts_the_padded_share_of_a_patch():
    f = probe.outside_fraction((10, 10, 10), np.array([[5.0, 5, 5], [0, 5, 5], [0, 0, 0]]), 4)
    np.testing.assert_allclose(f, [0.0, 0.5, 1 - 0.125])  # inside; half; one octant inside


def test_top_of_ranking_is_the_share_of_tps_above_the_kth_false_positive():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.65, 0.1])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    r = probe.top_of_ranking(scores, labels, n_scans=2)  # k = 0.25 x 2 = 0 ... 8 x 2 = 16
    assert r["0.125"] is None and r["0.25"] is None  # fewer than one FP allowed
    assert r["0.5"] == 1 / 3  # k = 1: above 0.9 -> the 0.95 only
    assert r["1"] == 1 / 3 and r["2"] == 2 / 3  # k = 2: above 0.8; k = 4: above 0.6
    assert r["8"] is None  # k = 16 > 5 FPs
