"""Phantom dataset: LUNA16 layout, nodule HU and placement, diameters, seeds."""

import csv
import filecmp
import os

import numpy as np
import pytest
from scipy import ndimage, stats

from nodulejax.data.phantom import nodules as phantom_nodules
from nodulejax.data.phantom.generate import (
    DEFAULT_MAX_VOXELS,
    generate_dataset,
    generate_scan,
    plot_scan_summary,
    scan_seed,
)

REAL_ANN = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data",
                        "luna16", "annotations.csv")
if not os.path.exists(REAL_ANN):  # the checkout's sibling shared/ (CI) or the workspace copy
    REAL_ANN = "/work/shared/data/luna16/annotations.csv"
TINY = dict(size_scale=0.35, max_voxels=300_000)
N_SCANS = 20


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("phantom"))
    summary = generate_dataset(out, N_SCANS, seed=3, num_subsets=10, **TINY)
    return out, summary


def _rows(path, header=True):
    with open(path, newline="") as f:
        return list(csv.DictReader(f)) if header else list(csv.reader(f))


@pytest.fixture(scope="module")
def loaded(root):
    """Every scan through the LUNA16 reader, its classical lung mask and its label mask."""
    luna16 = pytest.importorskip("nodulejax.data.luna16")
    io = pytest.importorskip("nodulejax.data.io")
    preprocess = pytest.importorskip("nodulejax.data.preprocess")
    out, _ = root
    ds = luna16.Luna16Dataset(out)
    vols = {}
    for uid in ds.uids():
        vol = ds.load(uid)
        mask = io.load_ct(os.path.join(out, "masks", uid + ".mhd"))
        lung = preprocess.lung_mask(vol)
        vols[uid] = (vol, mask, lung)
    return ds, vols


def test_layout_loads_through_luna16_reader(root, loaded):
    out, summary = root
    ds, vols = loaded
    uids = [r[0] for r in _rows(os.path.join(out, "seriesuids.csv"), header=False)]
    assert uids == summary["uids"] and len(set(uids)) == N_SCANS
    assert sorted(ds.uids()) == sorted(uids)
    assert all(u.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.") for u in uids)
    assert {ds.fold_of(u) for u in uids} == set(range(10))
    assert len(ds.annotations) == summary["num_nodules"] > 0
    assert np.all(ds.annotations.diameter_mm >= 3.0)
    exc = ds.excluded.diameter_mm
    assert len(exc) == summary["num_excluded"] > 0 and np.all((exc == -1) | (exc >= 3.0))
    cand = ds.candidates
    assert (cand.label == 1).sum() == len(ds.annotations)
    assert (cand.label == 0).sum() > 10 * N_SCANS  # distractors
    dirs = [np.diag(v[0].direction) for v in vols.values()]
    assert any(np.allclose(d, [-1, -1, 1]) for d in dirs)  # LUNA16's flipped TransformMatrix
    assert any(np.allclose(d, [1, 1, 1]) for d in dirs)
    sp = np.array([v[0].spacing for v in vols.values()])
    assert len(np.unique(np.round(sp[:, 0], 3))) > 2  # scanner variety
    for vol, mask, _ in vols.values():
        assert mask.shape == vol.shape
        np.testing.assert_allclose(mask.origin, vol.origin)
        np.testing.assert_allclose(mask.direction, vol.direction)


def _hu_checks(arr, labels, zyx, label, ntype):
    """HU near the annotated centre: the centre voxel, and the peak over the nodule's own
    voxels (its label in masks/) among the 27 around the centre (partial volume at thick
    slices can dim the centre voxel of a 3-4 mm nodule)."""
    i = np.clip(np.rint(zyx).astype(int), 0, np.array(arr.shape) - 1)
    box = tuple(slice(max(c - 1, 0), c + 2) for c in i)
    own = arr[box][labels[box] == label]
    centre = float(arr[tuple(i)])
    peak = float(own.max()) if own.size else centre
    if ntype in ("solid", "part-solid"):
        return -300 <= peak <= 500, (centre, peak)
    if ntype == "calcified":
        return peak >= 200, (centre, peak)
    return -850 <= centre <= -150, (centre, peak)  # ground-glass


def test_nodules_in_lung_with_type_hu_and_on_mask(root, loaded):
    """Each annotation (flipped scans included) lands on its nodule: inside the classical lung
    mask (or, juxta-pleural, touching it), on its label in masks/, HU fitting its type."""
    out, _ = root
    _, vols = loaded
    rows = _rows(os.path.join(out, "nodules.csv"))
    assert {r["type"] for r in rows} <= set(phantom_nodules.TYPES)
    n_checked, n_flipped = 0, 0
    outside = {}
    for r in rows:
        if r["excluded"] == "1":
            continue
        vol, mask, lung = vols[r["seriesuid"]]
        xyz = np.array([float(r[k]) for k in ("coordX", "coordY", "coordZ")])
        zyx = vol.world_to_voxel(xyz)
        i = tuple(np.clip(np.rint(zyx).astype(int), 0, np.array(vol.shape) - 1))
        if r["seriesuid"] not in outside:
            outside[r["seriesuid"]] = ndimage.distance_transform_edt(~lung, sampling=vol.spacing)
        dist = outside[r["seriesuid"]][i]
        radius = float(r["diameter_mm"]) / 2
        allowed = 2.5 + (radius if r["location"] == "juxta-pleural" else 0.0)
        assert dist <= allowed, (r, dist)
        near = mask.array[tuple(slice(max(c - 1, 0), c + 2) for c in i)]
        assert int(r["label"]) in near.astype(int), r
        ok, vals = _hu_checks(vol.array, mask.array, zyx, int(r["label"]), r["type"])
        assert ok, (r, vals, vol.spacing)
        n_checked += 1
        n_flipped += bool(vol.direction[0, 0] < 0)
    assert n_checked >= 15 and n_flipped >= 2


def test_classical_lung_mask_agrees_with_truth(root, loaded):
    """The phantom's lungs are segmentable like real ones: classical mask ~ generator truth."""
    _, summary = root
    _, vols = loaded
    for i in (0, 1):
        truth = generate_scan(scan_seed(3, i), **TINY).lung
        lung = vols[summary["uids"][i]][2]
        dice = 2 * (truth & lung).sum() / (truth.sum() + lung.sum())
        assert dice > 0.8, (i, dice)


def test_diameters_match_real_luna16():
    if not os.path.exists(REAL_ANN):
        pytest.skip(f"{REAL_ANN} not present")
    real = np.array([float(r["diameter_mm"]) for r in _rows(REAL_ANN)])
    rng = np.random.default_rng(0)
    gen = [
        f.diameter_mm
        for _ in range(1200)
        for f in phantom_nodules.sample_findings(rng)
        if not f.excluded
    ]
    assert len(gen) > 1000
    assert stats.ks_2samp(gen, real).pvalue > 0.01
    # and the generator is not trivially loose: a shifted distribution is rejected
    assert stats.ks_2samp(np.array(gen) * 1.15, real).pvalue < 0.01


def test_same_seed_same_bytes(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    # b is written by two worker processes: the same bytes as a (one process)
    for d, s, w in ((a, 7, 1), (b, 7, 2), (c, 8, 1)):
        generate_dataset(d, 2, seed=s, num_subsets=2, size_scale=0.3, max_voxels=150_000,
                         workers=w)
    files = sorted(os.path.relpath(os.path.join(dp, f), a) for dp, _, fs in os.walk(a) for f in fs)
    assert len(files) == 2 * 2 * 2 + 5
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    assert _rows(os.path.join(a, "seriesuids.csv"), False) != _rows(
        os.path.join(c, "seriesuids.csv"), False
    )


def test_default_scan_size_and_body_width():
    sc = generate_scan(scan_seed(0, 0))
    assert 1_000_000 <= sc.hu.size <= DEFAULT_MAX_VOXELS
    assert sc.hu.dtype == np.int16 and sc.mask.shape == sc.hu.shape == sc.lung.shape
    mid = sc.hu[sc.hu.shape[0] // 2]
    cols = np.nonzero((mid > -500).any(0))[0]
    width = (cols.max() - cols.min()) * sc.geometry.spacing[2]
    assert 170 <= width <= 240, width
    assert 0.05 < sc.lung.mean() < 0.5
    lung_hu = np.median(sc.hu[sc.lung])
    assert -900 < lung_hu < -780, lung_hu


def test_plot_scan_summary_writes_png(tmp_path):
    sc = generate_scan(5, size_scale=0.3, max_voxels=150_000)
    path = str(tmp_path / "scan.png")
    plot_scan_summary(sc, sc.nodules, path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 5000


def _own_hu(root, rows):
    """Median HU over each row's own voxels (its label in masks/), None if it has none."""
    luna16 = pytest.importorskip("nodulejax.data.luna16")
    io = pytest.importorskip("nodulejax.data.io")
    ds, vols, out = luna16.Luna16Dataset(root), {}, []
    for r in rows:
        uid = r["seriesuid"]
        if uid not in vols:
            vols[uid] = (ds.load(uid), io.load_ct(os.path.join(root, "masks", uid + ".mhd")))
        vol, mask = vols[uid]
        own = vol.array[mask.array == int(r["label"])]
        out.append(float(np.median(own)) if own.size else None)
    return out


def test_lidc_shapes_keep_the_findings_and_take_the_real_types(tmp_path):
    """shapes="lidc": the same findings (positions, diameters, locations) as the primitives of
    the same seed; every finding >= 3 mm is a library nodule whose ratings give its type;
    the planted voxels carry that type's HU."""
    from nodulejax.data.phantom import shapes

    kw = dict(num_subsets=2, size_scale=0.35, max_voxels=300_000, nodules_per_scan=6.0)
    prim = generate_dataset(str(tmp_path / "p"), 3, seed=11, **kw)
    real = generate_dataset(str(tmp_path / "r"), 3, seed=11, shapes="lidc", **kw)
    assert (prim["shapes"], real["shapes"]) == ("primitives", "lidc")
    rp = _rows(os.path.join(tmp_path, "p", "nodules.csv"))
    rr = _rows(os.path.join(tmp_path, "r", "nodules.csv"))
    assert len(rr) == len(rp) >= 12
    same = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "location", "excluded",
            "label")
    assert [[r[k] for k in same] for r in rr] == [[r[k] for k in same] for r in rp]
    assert {r["shape"] for r in rp} == {"primitive"}
    by_key = {row.key: row for row in shapes.library().rows}
    n_real = 0
    for r in rr:
        if float(r["diameter_mm"]) < 3.0:
            assert r["shape"] == "primitive"
            continue
        assert by_key[r["shape"]].type == r["type"]
        n_real += 1
    assert n_real >= 10
    hu = _own_hu(os.path.join(tmp_path, "r"), rr)
    n_hu = 0
    for r, h in zip(rr, hu, strict=True):
        if h is None or r["shape"] == "primitive" or float(r["diameter_mm"]) < 5:
            continue  # small nodules at thick slices: partial volume
        lo, hi = {"solid": (-450, 200), "part-solid": (-750, 100), "ground-glass": (-800, -250),
                  "calcified": (100, 1500)}[r["type"]]
        assert lo <= h <= hi, (r, h)
        n_hu += 1
    assert n_hu >= 5


def test_lidc_shapes_are_the_same_bytes_whatever_the_workers(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for d, w in ((a, 1), (b, 2)):
        generate_dataset(d, 2, seed=7, num_subsets=2, size_scale=0.3,
                                 max_voxels=150_000, workers=w, shapes="lidc",
                                 nodules_per_scan=4.0)
    files = sorted(os.path.relpath(os.path.join(dp, f), a) for dp, _, fs in os.walk(a) for f in fs)
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors and len(match) == 2 * 2 * 2 + 5
    assert any(r["shape"].startswith("lidc:") for r in _rows(os.path.join(a, "nodules.csv")))
