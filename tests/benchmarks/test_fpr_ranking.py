"""The ranking probe's candidate labels (benchmarks/fpr_ranking.py): the LUNA16 hit rule,
small and excluded findings ignored, and the distance to the nearest candidate."""

import os
import sys
from types import SimpleNamespace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
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
