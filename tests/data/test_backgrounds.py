"""nodulejax.data.backgrounds: lung background centres away from every finding (Section 4) -
the one sampler of the pool, the in-loop augmentation, the stress tests and the figures."""

import numpy as np
import pytest

from nodulejax.data import backgrounds
from nodulejax.errors import ConfigError


def test_sample_background_centers():
    mask = np.zeros((20, 30, 30), bool)
    mask[2:18, 5:25, 5:25] = True
    nod = np.array([[10, 15, 15], [5, 8, 20]])
    c = backgrounds.sample_background_centers(mask, nod, 50, 6.0, np.random.default_rng(0))
    assert c.shape == (50, 3) and len({tuple(r) for r in c}) == 50
    assert mask[tuple(c.T)].all()
    assert np.linalg.norm(c[:, None] - nod[None], axis=2).min() >= 6.0
    c2 = backgrounds.sample_background_centers(mask, nod, 50, 6.0, np.random.default_rng(0))
    assert (c == c2).all()
    # per-nodule distances and the exhaustive fallback when few voxels remain
    tiny = np.zeros((10, 10, 10), bool)
    tiny[5, 5, 3:8] = True
    c3 = backgrounds.sample_background_centers(tiny, [[5, 5, 5]], 4, 1.0, np.random.default_rng(1))
    assert sorted(c3[:, 2].tolist()) == [3, 4, 6, 7]
    with pytest.raises(ConfigError, match="only 4"):
        backgrounds.sample_background_centers(tiny, [[5, 5, 5]], 5, 1.0, np.random.default_rng(1))


def test_background_patches_do_not_depend_on_the_other_scans():
    class Scan:
        def __init__(self, uid, seed):
            rng = np.random.default_rng(seed)
            self.uid, self.spacing = uid, 1.0
            self.image = rng.uniform(0, 1, (24, 24, 24)).astype(np.float32)
            self.lung = np.zeros((24, 24, 24), bool)
            self.lung[4:20, 4:20, 4:20] = True
            self.nodules_zyx = np.array([[12.0, 12.0, 12.0]])
            self.nodules_diam_mm = np.array([4.0])
            self.excluded_zyx = np.zeros((0, 3))
            self.excluded_diam_mm = np.zeros(0)

    a, b = Scan("1.2.3", 0), Scan("1.2.4", 1)
    x_ab, uid_ab, c_ab = backgrounds.background_patches([a, b], 8, 3, seed=5)
    x_b, uid_b, c_b = backgrounds.background_patches([b], 8, 3, seed=5)
    assert x_ab.shape == (6, 8, 8, 8) and list(uid_ab) == ["1.2.3"] * 3 + ["1.2.4"] * 3
    np.testing.assert_array_equal(x_ab[3:], x_b)
    np.testing.assert_array_equal(c_ab[3:], c_b)
    d = np.linalg.norm(c_ab - a.nodules_zyx[0], axis=1)
    assert d.min() >= 4.0 / 2 / a.spacing + 8 / 2  # nodule radius + half a patch (voxels)
