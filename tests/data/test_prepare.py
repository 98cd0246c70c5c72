"""prepare.py / patchsets.py on a tiny generated phantom (4 scans, ~0.3 M voxels each)."""

import os

import numpy as np
import pytest
from scipy import ndimage

from nodulejax.data import luna16, phantom, prepare
from nodulejax.data.patchsets import cg_crop_batch, fpr_patches, nodule_cutouts, seg_patches

SPACING = 1.5
WINDOW = (-1000.0, 400.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("phantom"))
    phantom.generate_dataset(out, num_scans=4, seed=3, size_scale=0.3, num_subsets=4,
                             max_voxels=300_000)
    return out


@pytest.fixture(scope="module")
def dataset(root):
    return luna16.Luna16Dataset(root)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def scans(dataset, cache_dir):
    return prepare.prepare_folds(dataset, [0, 1, 2, 3], spacing=SPACING, window=WINDOW,
                                 cache_dir=cache_dir)


def test_prepare_folds_geometry_and_ranges(dataset, scans):
    assert len(scans) == 4
    assert sorted(s.fold for s in scans) == [0, 1, 2, 3]
    assert {s.uid for s in scans} == set(dataset.uids())
    for s in scans:
        assert s.image.dtype == np.float32 and s.image.ndim == 3
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.lung.dtype == bool and s.lung.shape == s.image.shape
        assert 0.02 < s.lung.mean() < 0.6  # a lung, neither empty nor the whole volume
        np.testing.assert_allclose(s.geometry.spacing, SPACING)
        assert s.seg is not None and s.seg.shape == s.image.shape
    # one fold only -> only that fold's scans
    one = prepare.prepare_folds(dataset, [2], spacing=SPACING, window=WINDOW)
    assert [s.fold for s in one] == [2]


def test_worker_processes_prepare_the_same_scans(dataset, scans, tmp_path):
    """prepare_folds(workers=2) fills the cache in two spawned processes: same arrays."""
    par = prepare.prepare_folds(dataset, [0, 1, 2, 3], spacing=SPACING, window=WINDOW,
                                cache_dir=str(tmp_path), workers=2)
    assert [s.uid for s in par] == [s.uid for s in scans]
    for a, b in zip(scans, par, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.lung, b.lung)
        np.testing.assert_array_equal(a.seg, b.seg)
        np.testing.assert_array_equal(a.nodules_zyx, b.nodules_zyx)


def test_cache_round_trip_identical(dataset, scans, cache_dir):
    fresh = prepare.prepare_scan(dataset, scans[0].uid, spacing=SPACING, window=WINDOW)
    tag_dirs = os.listdir(cache_dir)
    assert len(tag_dirs) == 1
    assert len(os.listdir(os.path.join(cache_dir, tag_dirs[0]))) == 4
    cached = prepare.prepare_scan(dataset, scans[0].uid, spacing=SPACING, window=WINDOW,
                                  cache_dir=cache_dir)
    for a in (fresh, scans[0]):
        np.testing.assert_array_equal(a.image, cached.image)
        np.testing.assert_array_equal(a.lung, cached.lung)
        np.testing.assert_array_equal(a.seg, cached.seg)
        np.testing.assert_array_equal(a.nodules_zyx, cached.nodules_zyx)
        np.testing.assert_array_equal(a.cand_zyx, cached.cand_zyx)
        np.testing.assert_array_equal(a.geometry.origin, cached.geometry.origin)
    # world coordinates survive: a nodule's voxel centre maps back to its annotation
    ann = dataset.annotations.for_uid(scans[0].uid)
    if len(ann):
        xyz = cached.geometry.voxel_to_world(cached.nodules_zyx)
        np.testing.assert_allclose(np.atleast_2d(xyz), ann.xyz, atol=1e-6)


def test_nodule_centres_in_lung_and_labelled(scans):
    n = hits = inside = 0
    for s in scans:
        assert len(s.nodule_types) == len(s.nodules_zyx)
        for i, c in enumerate(s.nodules_zyx):
            r = tuple(np.round(c).astype(int))
            assert all(0 <= r[a] < s.image.shape[a] for a in range(3))
            # the centre is in the lung mask, or (juxta-pleural nodules, which a threshold
            # lung mask may cut away) within the nodule's radius of it
            d_mm = ndimage.distance_transform_edt(~s.lung, sampling=s.spacing)[r]
            assert d_mm <= s.nodules_diam_mm[i] / 2 + s.spacing, \
                f"{s.uid} nodule {i} centre {c} is {d_mm:.1f} mm outside the lung mask"
            inside += bool(s.lung[r])
            # mask label i + 1 is this nodule (documented), wherever the dataset numbers it:
            # its voxels sit around the annotated centre (small juxta-pleural nodules are
            # clipped by the wall, so the centroid may be off by ~1 voxel, not by a radius)
            lab = np.argwhere(s.nodule_mask() == i + 1)
            assert len(lab) > 0
            off_mm = np.linalg.norm(lab.mean(0) - c) * s.spacing
            assert off_mm < s.nodules_diam_mm[i] / 2 + s.spacing
            hits += s.nodule_mask()[r] == i + 1
            n += 1
    assert n >= 3
    assert hits >= 0.7 * n
    assert inside >= 0.7 * n


def test_fpr_patches_positives_brighter(scans):
    p = fpr_patches(scans, 16, neg_radius_mm=10.0)
    x, y = p["x"], p["y"]
    assert x.shape[1:] == (16, 16, 16) and len(x) == len(y) == len(p["scan"])
    assert (y == 1).sum() == sum(len(s.nodules_zyx) for s in scans)
    assert (y == 0).sum() > (y == 1).sum()
    centre = x[:, 8, 8, 8].astype(np.float32)
    assert centre[y == 1].mean() > centre[y == 0].mean() + 0.1
    # negatives are farther than 10 mm from every finding
    for k in np.flatnonzero(y == 0):
        s = scans[p["scan"][k]]
        f = np.concatenate([s.nodules_zyx, s.excluded_zyx.reshape(-1, 3)])
        assert np.min(np.linalg.norm((f - p["zyx"][k]) * s.spacing, axis=1)) > 10.0
    # max_neg_per_scan bounds negatives per scan
    q = fpr_patches(scans, 16, max_neg_per_scan=3, seed=1)
    for i in range(len(scans)):
        assert ((q["scan"] == i) & (q["y"] == 0)).sum() <= 3


def test_seg_patches_masks_cover_nodule_centres(scans):
    p = seg_patches(scans, 16, negatives_per_scan=1, seed=0)
    npos = sum(len(s.nodules_zyx) for s in scans)
    assert len(p["x"]) == npos + len(scans)
    assert p["mask"][:, 8, 8, 8].sum() >= npos  # every nodule patch has its centre masked


def test_nodule_cutouts_zero_far_from_nodule(scans):
    blur = 2.0
    c = nodule_cutouts(scans, 24, blur_mm=blur)
    assert len(c["x"]) == sum(len(s.nodules_zyx) for s in scans)
    grid = np.stack(np.meshgrid(*[np.arange(24)] * 3, indexing="ij"), -1)
    # patch centre voxel for an integer-rounded centre is index 12
    dist_mm = np.linalg.norm(grid - 12, axis=-1) * SPACING
    for x, d in zip(c["x"], c["diameter_mm"], strict=True):
        assert x[12, 12, 12] > 0.1  # the nodule itself is kept
        far = dist_mm > d + blur + 2 * SPACING  # well beyond radius + blur (masks not spheres)
        assert far.any()
        assert np.all(x[far] == 0.0)
        assert 0.0 <= x.min() and x.max() <= 1.0


def test_cg_crop_heatmap_peaks_at_nodules(scans):
    from nodulejax.losses.detection import heatmap_target

    rng = np.random.default_rng(0)
    size, sigma = 24, 2.0
    b = cg_crop_batch(scans, size, 8, rng, pos_frac=1.0)
    assert b["image"].shape == (8, size, size, size)
    assert b["boxes"].shape[:2] == b["valid"].shape and b["boxes"].shape[2] == 4
    seen = 0
    for img, boxes, valid in zip(b["image"], b["boxes"], b["valid"], strict=True):
        assert valid.any()  # pos_frac=1: jitter of a quarter crop keeps the nodule inside
        hm = np.asarray(heatmap_target((size,) * 3, boxes[:, :3], sigma, valid=valid))
        assert 0.0 <= hm.min() and hm.max() <= 1.0 + 1e-6
        for z, y, x, d in boxes[valid]:
            assert 0 <= z < size and 0 <= y < size and 0 <= x < size and d > 0
            r = tuple(np.round([z, y, x]).astype(int))
            if not all(0 <= v < size for v in r):
                continue
            assert hm[r] > 0.99  # the blob peaks (= 1) at the nodule centre
            assert img[r] > 0.25  # a nodule there: brighter than aerated lung (~0.1)
            seen += 1
        assert np.isclose(hm.max(), 1.0, atol=1e-3)
    assert seen >= 8
    # random lung crops: the target is empty exactly when no nodule is inside the crop
    neg = cg_crop_batch(scans, size, 4, np.random.default_rng(1), pos_frac=0.0)
    for boxes, valid in zip(neg["boxes"], neg["valid"], strict=True):
        hm = np.asarray(heatmap_target((size,) * 3, boxes[:, :3], sigma, valid=valid))
        assert (hm.max() > 0.5) == bool(valid.any())
