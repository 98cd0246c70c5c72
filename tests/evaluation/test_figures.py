"""nodulejax.evaluation.figures: the mosaics of Figs. 5, 6, 8 and 9 from patch arrays (the
figures stage on trained models runs in tests/evaluation/test_stress.py and the tiny study)."""

import os

import numpy as np

from nodulejax.evaluation import figures


def test_mosaics_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 8, 8, 8)).astype(np.float32)
    assert figures.central(x).shape == (3, 8, 8) and figures.central(x[0]).shape == (8, 8)
    paths = [
        figures.fig5_synthetic(str(tmp_path / "f5.png"), x, x[::-1], [0.9, 0.8, 0.7],
                               [0.2, 0.3, 0.1], n=3),
        figures.fig6_perturbations(str(tmp_path / "f6.png"),
                                   [("positive", x[0], x[1], 0.9, 0.1),
                                    ("noise", x[1], x[2], 0.1, 0.9)]),
        figures.fig8_real_vs_synthetic(str(tmp_path / "f8.png"), x, x[::-1], n=3),
        figures.fig9_noise(str(tmp_path / "f9.png"), x[:2], [0.0, 0.3],
                           [[x[0], x[1]], [x[1], x[2]]], [x[2], x[0]]),
    ]
    for p in paths:
        assert os.path.getsize(p) > 1000


def test_synthetic_nodules_are_shown_at_their_widest_slice():
    bg = np.full((8, 8, 8), 0.2, np.float32)
    fused = bg.copy()
    fused[1, 3:5, 3:5] = 0.9  # a small cap above the centre
    fused[6, 2:6, 2:6] = 0.9  # the nodule's widest cross-section below it
    assert figures.nodule_slice(fused, bg) == 6
    assert figures.nodule_slice(bg, bg) == 4  # nothing fused: the central slice
    # two versions (random / PGD code): the union of their masks, a darker one included
    other = bg.copy()
    other[3, :, :] = 0.05  # fused darker than its background, the widest of all
    assert figures.nodule_slice(np.stack([fused, other]), bg) == 3
    assert figures.nodule_slice(np.stack([fused, bg]), bg) == 6
    s = figures.central(fused[6])
    assert s.shape == (8, 8) and s.max() == np.float32(0.9)  # a chosen slice passes through
