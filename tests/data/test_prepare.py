"""prepare.py on a tiny generated phantom (4 scans, ~0.3 M voxels each; fixtures in
``tests/data/conftest.py``, shared with test_patchsets.py)."""

import os

import numpy as np
from scipy import ndimage

from nodulejax.data import prepare
from tests.data.conftest import SPACING, WINDOW


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
