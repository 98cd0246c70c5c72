"""Tests for nodulejax.data.preprocess: world-consistent resampling, windowing, lung mask."""

import itertools

import numpy as np
import pytest
from scipy import ndimage

from nodulejax.data.io import CTVolume
from nodulejax.data.preprocess import lung_mask, resample, resample_array, resampled_shape, window

FLIPS = {
    "identity": np.eye(3),
    "flip_xy": np.diag([-1.0, -1.0, 1.0]),  # the flipped TransformMatrix seen in LUNA16
    "flip_z": np.diag([1.0, 1.0, -1.0]),
}


# --------------------------------------------------------------------------- resampling


def _blob_volume(direction, center_zyx, shape=(20, 40, 36), spacing=(2.5, 0.7, 0.8)):
    spacing = np.asarray(spacing)
    zyx = np.indices(shape).astype(np.float64)
    d2 = sum(((zyx[i] - center_zyx[i]) * spacing[i]) ** 2 for i in range(3))
    arr = -1000.0 + 2000.0 * np.exp(-d2 / (2 * 3.0**2))  # Gaussian blob, sigma 3 mm
    return CTVolume(arr, spacing, np.array([-12.3, 45.6, -300.0]), direction)


def _centroid_world(vol):
    w = np.clip(vol.array + 1000.0, 0, None).astype(np.float64)
    w[w < 0.05 * w.max()] = 0
    c = np.array(ndimage.center_of_mass(w))
    return vol.voxel_to_world(c)


@pytest.mark.parametrize("name", list(FLIPS))
@pytest.mark.parametrize("target", [0.625, (1.0, 0.5, 1.3)])
def test_resample_preserves_world_position(name, target):
    center = np.array([9.3, 17.6, 21.2])
    vol = _blob_volume(FLIPS[name], center)
    world = vol.voxel_to_world(center)
    np.testing.assert_allclose(_centroid_world(vol), world, atol=0.05)
    out = resample(vol, target)
    np.testing.assert_allclose(out.spacing, np.broadcast_to(target, (3,)))
    np.testing.assert_array_equal(out.origin, vol.origin)
    np.testing.assert_array_equal(out.direction, vol.direction)
    # the blob is found at the same world coordinate after resampling
    np.testing.assert_allclose(_centroid_world(out), world, atol=0.1)
    # and world_to_voxel on the new grid points at the blob's peak
    peak = np.round(out.world_to_voxel(world)).astype(int)
    assert out.array[tuple(peak)] >= 0.8 * out.array.max() and out.array.max() > 500.0
    # the resampled grid covers the same physical extent without extrapolating
    ext_in = (np.array(vol.shape) - 1) * vol.spacing
    ext_out = (np.array(out.shape) - 1) * out.spacing
    assert np.all(ext_out <= ext_in + 1e-6) and np.all(ext_out > ext_in - out.spacing)


@pytest.mark.parametrize("name", list(FLIPS))
def test_bright_voxel_world(name):
    """A single bright voxel at a known world point; upsampling by an integer factor puts a
    new voxel exactly on it, holding its value (trilinear and nearest)."""
    sp = np.array([2.0, 1.2, 0.9])
    arr = np.full((9, 10, 11), -1000.0)
    arr[4, 6, 3] = 1000.0
    vol = CTVolume(arr, sp, np.array([100.0, -50.0, 20.0]), FLIPS[name])
    world = vol.voxel_to_world([4, 6, 3])
    for order in (0, 1):
        out = resample(vol, sp / np.array([4, 3, 3]), order=order)
        kf = out.world_to_voxel(world)
        np.testing.assert_allclose(kf, np.round(kf), atol=1e-9)  # lands on a new voxel
        k = tuple(np.round(kf).astype(int))
        assert out.array[k] == pytest.approx(1000.0)
        if order == 1:  # trilinear: the only voxel at full value is that one
            assert np.unravel_index(np.argmax(out.array), out.shape) == k
            assert np.sum(out.array > 999.0) == 1


def test_resample_bool_and_shape():
    m = np.zeros((5, 6, 7), bool)
    m[2, 3, 4] = True
    out = resample_array(m, (2.0, 1.0, 1.0), 1.0)
    assert out.dtype == np.bool_ and out.shape == resampled_shape(m.shape, (2, 1, 1), 1.0)
    assert out.shape == (9, 6, 7)
    assert out[4, 3, 4] and out.sum() <= 3
    with pytest.raises(ValueError):
        resample_array(m, (2.0, 1.0, 1.0), 0.0)


# ---------------------------------------------------------------------------- windowing


def test_window():
    hu = np.array([-3000.0, -1000.0, -300.0, 400.0, 3000.0])
    w = window(hu)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    w2 = window(hu, lo=-1400.0, hi=200.0)
    np.testing.assert_allclose(w2, np.clip((hu + 1400) / 1600, 0, 1), atol=1e-6)
    assert np.all(np.diff(window(np.linspace(-2000, 2000, 50))) >= 0)
    with pytest.raises(ValueError):
        window(hu, lo=100.0, hi=100.0)


# ---------------------------------------------------------------------------- lung mask

SP = np.array([3.0, 3.0, 3.0])


def _torso(seed=0):
    """Synthetic torso (z, y, x) 48x80x112 at 3 mm, superior = last slice: air -1000 outside,
    body ellipse ~0 HU, two ellipsoid lungs ~-850 HU with bright vessel tubes, a trachea from
    the top slice that bifurcates into both lungs, a juxta-pleural nodule. Returns
    (hu, truth dict)."""
    rng = np.random.default_rng(seed)
    shape = (48, 80, 112)
    z, y, x = (np.indices(shape).astype(np.float64) + 0.5) * SP[:, None, None, None]
    cy, cx = 40 * 3.0, 56 * 3.0
    hu = np.full(shape, -1000.0)
    body = ((x - cx) / 155.0) ** 2 + ((y - cy) / 105.0) ** 2 <= 1.0
    hu[body] = 20.0
    hu[body & ((((x - cx) / 145.0) ** 2 + ((y - cy) / 95.0) ** 2) > 1.0)] = -100.0  # fat
    lungs = []
    for side in (-1, 1):
        lx = cx + side * 72.0
        e = ((x - lx) / 50.0) ** 2 + ((y - cy) / 70.0) ** 2 + ((z - 60.0) / 65.0) ** 2 <= 1.0
        lungs.append(e)
        hu[e] = -850.0
    # vessels: bright tubes (radius 3 mm) running along z inside each lung
    vessels = np.zeros(shape, bool)
    for side in (-1, 1):
        for dx, dy in ((-15, 0), (10, 25), (5, -30)):
            t = (x - (cx + side * 72.0 + dx)) ** 2 + (y - (cy + dy)) ** 2 <= 3.0**2
            t &= lungs[0 if side < 0 else 1]
            vessels |= t
    hu[vessels] = 40.0
    # trachea: radius 9 mm from the top down to z = 95 mm, then bronchi to both lungs
    trachea = ((x - cx) ** 2 + (y - cy) ** 2 <= 9.0**2) & (z >= 95.0)
    bronchi = np.zeros(shape, bool)
    for side in (-1, 1):
        for t in np.linspace(0, 1, 60):
            p = np.array([95.0 - 35 * t, cy, cx + side * 40.0 * t])
            bronchi |= (z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2 <= 6.0**2
    airway = (trachea | bronchi) & body
    hu[airway] = -1000.0
    # juxta-pleural nodule: soft-tissue sphere r=7 mm on the lateral wall of the left lung
    nod_c = np.array([60.0, cy, cx - 72.0 - 50.0 + 4.0])
    nodule = ((z - nod_c[0]) ** 2 + (y - nod_c[1]) ** 2 + (x - nod_c[2]) ** 2) <= 7.0**2
    hu[nodule & body] = 30.0
    hu += rng.normal(0, 25.0, shape)
    return hu.astype(np.float32), dict(
        lungs=lungs,
        vessels=vessels,
        trachea=trachea & body,
        bronchi=bronchi & body,
        nodule_center=nod_c / SP - 0.5,
    )


@pytest.fixture(scope="module")
def torso():
    hu, truth = _torso()
    return hu, truth, lung_mask(hu, SP)


def _dice(a, b):
    return 2 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def test_lung_mask_both_lungs(torso):
    hu, truth, m = torso
    assert m.dtype == np.bool_ and m.shape == hu.shape
    lab, n = ndimage.label(m)
    assert n == 2
    for lung in truth["lungs"]:
        assert _dice(m & lung, lung) > 0.9  # each lung found...
        # ...by one component
        ids = np.unique(lab[lung & m])
        assert np.max(np.bincount(lab[lung & m])) > 0.95 * np.sum(lung & m) and 0 not in ids
    union = truth["lungs"][0] | truth["lungs"][1]
    assert _dice(m, union) > 0.9
    assert not m[hu > -500].mean() > 0.2  # body wall is not lung
    assert not m[:, :, :3].any() and not m[:, :3, :].any()  # outside air excluded


def test_lung_mask_trachea_excluded(torso):
    hu, truth, m = torso
    lungs = truth["lungs"][0] | truth["lungs"][1]
    tr = truth["trachea"] & ~lungs
    assert tr.sum() > 100
    assert m[tr].mean() < 0.05
    assert not m[-1].any()  # top slice holds only trachea


def test_lung_mask_vessels_and_nodule_inside(torso):
    hu, truth, m = torso
    assert m[truth["vessels"]].mean() > 0.98
    c = np.round(truth["nodule_center"]).astype(int)
    assert m[tuple(c)]


def test_lung_mask_flipped_volume(torso):
    """The same torso stored with z reversed (superior first) through a CTVolume whose
    direction says so gives the same mask (reversed)."""
    hu, truth, m = torso
    vol = CTVolume(hu[::-1].copy(), SP, np.zeros(3), np.diag([1.0, 1.0, -1.0]))
    m2 = lung_mask(vol)
    assert _dice(m2[::-1], m) > 0.99


def test_lung_mask_empty():
    hu = np.full((8, 16, 16), 30.0, np.float32)
    assert not lung_mask(hu, (1, 1, 1)).any()


def test_lung_mask_merged_lungs_are_split():
    """Lungs touching through an anterior air bridge (one 3D component) come out as two
    lungs, each matching its ellipsoid."""
    hu, truth = _torso(seed=1)
    z, y, x = np.indices(hu.shape)
    bridge = (abs(z - 20) <= 3) & (abs(x - 56) <= 18) & (abs(y - 22) <= 2)
    hu[bridge] = -850.0
    m = lung_mask(hu, SP)
    lab, n = ndimage.label(m)
    assert n == 2
    for lung in truth["lungs"]:
        assert m[lung].mean() > 0.98
        assert np.max(np.bincount(lab[lung])[1:]) > 0.95 * lung.sum()


@pytest.mark.parametrize("spacing", [(0.625, 0.625, 0.625), (2.5, 0.7, 0.7)])
def test_slab_distance_threshold_is_the_whole_volume_one(spacing):
    """The lung mask's closing thresholds Euclidean distances slab by slab (memory of a
    slab): the same booleans as one transform over the volume, also with slabs that hold no
    zero and for a volume with no zero."""
    from nodulejax.data.preprocess import _edt_threshold

    rng = np.random.default_rng(0)
    x = ndimage.binary_dilation(rng.random((70, 23, 19)) < 0.002, iterations=2)
    x[30:52] = False  # slabs far from any feature
    for vol in (~x, x, np.ones((70, 5, 6), bool)):
        d = ndimage.distance_transform_edt(vol, sampling=spacing)
        for above in (False, True):
            got = _edt_threshold(vol, spacing, 3.0, above=above, core=8)
            np.testing.assert_array_equal(got, d > 3.0 if above else d <= 3.0)


def test_label_x_sums_equal_scipy_sum_labels():
    from nodulejax.data.preprocess import _label_x_sums

    rng = np.random.default_rng(1)
    lab, n = ndimage.label(rng.random((9, 17, 23)) < 0.3)
    shape = lab.shape
    xsum, left = _label_x_sums(lab, n, 10.5)
    np.testing.assert_array_equal(xsum, ndimage.sum_labels(
        np.broadcast_to(np.arange(shape[2]), shape), lab, np.arange(n + 1)))
    np.testing.assert_array_equal(left, ndimage.sum_labels(
        np.broadcast_to(np.arange(shape[2]) < 10.5, shape), lab, np.arange(n + 1)))


# ------------------------------------------------------------------------------ patches
# (nodulejax.data.patches is tested here; it belongs to the same preprocessing stage)

from nodulejax.data import patches as pt  # noqa: E402


def _ramp(shape=(7, 8, 9)):
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("P", [1, 4, 5])
def test_patch_centre_voxel_at_half(P):
    a = _ramp()
    for c in [(3, 4, 4), (0, 0, 0), (6, 7, 8), (2, 5, 1)]:
        p = pt.extract_patch(a, c, P, -1.0)
        assert p.shape == (P, P, P)
        assert p[P // 2, P // 2, P // 2] == a[c]
    # fractional centres round half up, consistently on every axis
    p = pt.extract_patch(a, (2.5, 3.49, 4.51), 3, -1.0)
    assert p[1, 1, 1] == a[3, 3, 5]
    p = pt.extract_patch(a, (-0.5, 0.4999, 1.5), 3, -1.0)
    assert p[1, 1, 1] == a[0, 0, 2]


def test_patch_padding_corners():
    a = _ramp()
    P = 4
    for corner in itertools.product(*[(0, n - 1) for n in a.shape]):
        p = pt.extract_patch(a, corner, P, -7.0)
        start = np.array(corner) - P // 2
        for idx in itertools.product(range(P), repeat=3):
            src = start + np.array(idx)
            inside = np.all(src >= 0) and np.all(src < a.shape)
            assert p[idx] == (a[tuple(src)] if inside else -7.0)
    # fully outside -> all padding; anisotropic size and channels kept
    assert np.all(pt.extract_patch(a, (50, 50, 50), 3, -7.0) == -7.0)
    ac = np.stack([a, -a], axis=-1)
    p = pt.extract_patch(ac, (3, 4, 4), (3, 5, 1), 0.0)
    assert p.shape == (3, 5, 1, 2)
    np.testing.assert_array_equal(p[..., 0], a[2:5, 2:7, 4:5])
    np.testing.assert_array_equal(p[..., 1], -a[2:5, 2:7, 4:5])


def test_patches_batch_and_world():
    a = _ramp()
    rng = np.random.default_rng(0)
    cs = rng.uniform(-3, 10, (20, 3))
    batch = pt.extract_patches(a, cs, 5, -1.0)
    assert batch.shape == (20, 5, 5, 5)
    for i in range(20):
        np.testing.assert_array_equal(batch[i], pt.extract_patch(a, cs[i], 5, -1.0))
    for name, d in FLIPS.items():
        vol = CTVolume(a, (2.0, 0.7, 0.8), np.array([10.0, -20.0, 30.0]), d)
        c = np.array([3, 5, 2])
        w = vol.voxel_to_world(c)
        p = pt.extract_patch_world(vol, w, 3, -1000.0)
        assert p[1, 1, 1] == a[tuple(c)], name
        pw = pt.extract_patches_world(vol, np.stack([w, w]), 3, -1000.0)
        np.testing.assert_array_equal(pw[0], p)


def test_symmetries_are_permutations():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(5, 5, 5)).astype(np.float32)
    seen = set()
    for k in range(pt.NUM_SYMMETRIES):
        q = pt.symmetry(p, k)
        np.testing.assert_array_equal(np.sort(q.ravel()), np.sort(p.ravel()))
        assert q[2, 2, 2] == p[2, 2, 2]  # centre stays
        seen.add(q.tobytes())
    assert len(seen) == 48  # all distinct
    np.testing.assert_array_equal(pt.symmetry(p, 0), p)
    a = pt.random_flip_rot(p, 7)
    np.testing.assert_array_equal(a, pt.random_flip_rot(p, np.random.default_rng(7)))
    np.testing.assert_array_equal(np.sort(a.ravel()), np.sort(p.ravel()))
    # paired mask transformed identically
    m = p > 0
    a2, m2 = pt.random_flip_rot(p, 3, m)
    np.testing.assert_array_equal(m2, a2 > 0)
    # batch: each a permutation; seeds reproduce; many draws cover many symmetries
    b = np.stack([p] * 64)
    out = pt.random_flip_rot_batch(b, 11)
    np.testing.assert_array_equal(out, pt.random_flip_rot_batch(b, 11))
    for o in out:
        np.testing.assert_array_equal(np.sort(o.ravel()), np.sort(p.ravel()))
    assert len({o.tobytes() for o in out}) > 20
    # non-cubic patches only get shape-preserving symmetries
    r = rng.normal(size=(2, 3, 3))
    for s in range(20):
        assert pt.random_flip_rot(r, s).shape == (2, 3, 3)
