"""data/phantom/anatomy.py: the scanner grid's index <-> patient <-> world maps, the voxel
budget of ``sample_grid``, the lungs' placement and the tube renderer's occupancy."""

import numpy as np
import pytest

from nodulejax.data.phantom import anatomy as pa


@pytest.fixture(scope="module")
def chest():
    rng = np.random.default_rng(7)
    a = pa.sample_anatomy(rng, 0.4)
    return a, rng


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_grid_maps_index_patient_and_world_consistently(chest, flip_prob):
    a, _ = chest
    g = pa.sample_grid(np.random.default_rng(1), a, 200_000, flip_prob)
    assert np.prod(g.shape) <= 200_000
    np.testing.assert_array_equal(g.signs, [-1, -1, 1] if flip_prob else [1, 1, 1])
    zc, yc, xc = g.axes()
    idx = np.array([[0, 0, 0], [g.shape[0] - 1, 3, g.shape[2] - 2]])
    pts = np.stack([xc[idx[:, 2]], yc[idx[:, 1]], zc[idx[:, 0]]], -1)  # patient xyz
    np.testing.assert_allclose(g.patient_to_index(pts), idx, atol=1e-9)
    # world = origin + direction * spacing * index (ITK, xyz), as the MetaImage header says
    world = g.origin + g.signs * g.spacing[::-1] * idx[:, ::-1]
    np.testing.assert_allclose(g.patient_to_world(pts), world, atol=1e-6)


def test_sample_grid_coarsens_to_the_voxel_budget(chest):
    a, _ = chest
    fine = pa.sample_grid(np.random.default_rng(2), a, 10**9, 0.0)
    coarse = pa.sample_grid(np.random.default_rng(2), a, 50_000, 0.0)
    assert np.prod(coarse.shape) <= 50_000 < np.prod(fine.shape)
    # slices capped at 2.5 mm, up to the last 1% steps that absorb the shape's rounding
    assert np.all(coarse.spacing > fine.spacing) and coarse.spacing[0] <= 2.5 * 1.03
    assert 0.5 <= fine.spacing[1] <= 0.9 and fine.spacing[1] == fine.spacing[2]


def test_box_clips_to_the_grid_and_is_none_outside(chest):
    a, _ = chest
    g = pa.sample_grid(np.random.default_rng(3), a, 100_000, 0.0)
    zc, yc, xc = g.axes()
    lo, hi = np.array([xc[2], yc[2], zc[2]]), np.array([xc[5], yc[6], zc[4]])
    box = g.box(lo, hi)  # covers indices (2..4, 2..6, 2..5), at most a rounding voxel more
    for b, first, last in zip(box, (2, 2, 2), (4, 6, 5), strict=True):
        assert first - 1 <= b.start <= first and last + 1 <= b.stop <= last + 2
    big = np.array([1e4, 1e4, 1e4])
    assert g.box(-big, big) == tuple(slice(0, n) for n in g.shape)
    assert g.box(big, 2 * big) is None


def test_lungs_are_two_disjoint_sides_inside_the_body(chest):
    a, _ = chest
    rng = np.random.default_rng(0)
    pts = rng.uniform([-a.body_ax, -a.body_ay, a.z_lo], [a.body_ax, a.body_ay, a.z_hi],
                      (20_000, 3))
    right, left = (pa.lung_inside(a, *pts.T, side) for side in (0, 1))
    assert right.mean() > 0.05 and left.mean() > 0.05  # both lungs fill part of the chest
    assert not (right & left).any()
    assert (pts[right, 0] < 0).all() and (pts[left, 0] > 0).all()  # right = -x (LPS)
    np.testing.assert_array_equal(pa.lung_inside_points(a, pts), right | left)
    far = pts + np.array([3 * a.body_ax, 0.0, 0.0])  # outside the body wall
    assert not pa.lung_inside_points(a, far).any()


def test_capsule_occupancy_is_one_on_the_axis_and_zero_beyond_the_radius(chest):
    a, _ = chest
    g = pa.Grid(shape=(21, 21, 21), spacing=np.ones(3), origin=np.zeros(3),
                signs=np.ones(3), center=np.zeros(3))
    seg = np.array([[5.0, 10.0, 10.0, 15.0, 10.0, 10.0, 3.0, 3.0]])  # along x at y = z = 10
    out = np.zeros(g.shape, np.float32)
    pa.render_capsules(g, g.axes(), seg, out, edge_mm=1.0)
    assert out[10, 10, 10] == 1.0 and out[10, 10, 5] == 1.0  # axis and end point
    assert out[10, 13, 10] == pytest.approx(0.5)  # on the surface: half occupied
    assert out[10, 10, 2] == pytest.approx(0.5)  # the round end cap's surface
    assert out[10, 15, 10] == 0.0 and out[10, 10, 1] == 0.0 and out.min() == 0.0
    wider = out.copy()
    pa.render_capsules(g, g.axes(), seg, wider, edge_mm=1.0, add=1.0)  # max-composite
    assert np.all(wider >= out) and wider[10, 14, 10] == pytest.approx(0.5)
