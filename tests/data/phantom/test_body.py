"""data/phantom/body.py: the smoothed texture noise and the chest background's HU classes
(air outside, soft tissue in the wall, lung parenchyma where the lung mask is, bone)."""

import numpy as np
import pytest

from nodulejax.data.phantom import anatomy as pa
from nodulejax.data.phantom import body as pb


def test_smooth_noise_has_unit_variance_and_the_asked_correlation():
    rng = np.random.default_rng(0)
    n = pb.smooth_noise(rng, (16, 40, 40), (1.0, 4.0, 4.0))
    assert n.shape == (16, 40, 40) and n.dtype == np.float32
    assert abs(float(n.std()) - 1.0) < 0.25 and abs(float(n.mean())) < 0.5
    # smoothed in-plane: neighbours along x correlate far more than a white-noise field's
    r_x = np.corrcoef(n[:, :, :-1].ravel(), n[:, :, 1:].ravel())[0, 1]
    assert r_x > 0.8
    again = pb.smooth_noise(np.random.default_rng(0), (16, 40, 40), (1.0, 4.0, 4.0))
    np.testing.assert_array_equal(n, again)


@pytest.fixture(scope="module")
def background():
    rng = np.random.default_rng(4)
    a = pa.sample_anatomy(rng, 0.3)
    grid = pa.sample_grid(rng, a, 150_000, 0.0)
    return a, grid, pb.render_background(grid, a, rng)


def test_background_hu_classes_sit_where_the_anatomy_puts_them(background):
    a, grid, (hu, lung, tex) = background
    assert hu.shape == lung.shape == tex.shape == grid.shape and hu.dtype == np.float32
    assert np.isfinite(hu).all() and lung.any()
    assert hu[:, 0, 0].max() <= -900  # the field of view's corner is air
    assert -950 <= float(np.median(hu[lung])) <= -700  # parenchyma around -850 HU
    assert float(np.median(hu[~lung & (hu > -500)])) > -150  # fat, muscle, blood, bone
    assert hu.max() >= 250  # bone (cancellous +250, cortex up to +1000)
    zc, yc, xc = grid.axes()
    # every lung voxel is inside one of the anatomy's lungs (same rule, voxel centres)
    z, y, x = np.nonzero(lung)
    pts = np.stack([xc[x], yc[y], zc[z]], -1)[:: max(1, len(z) // 2000)]
    assert pa.lung_inside_points(a, pts).mean() > 0.95
