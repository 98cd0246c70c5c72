"""Tests for nodulejax.data.luna16: the real LUNA16 CSVs, the folder layout, bad input."""

import os
import re

import numpy as np
import pytest

from nodulejax.data import luna16
from nodulejax.errors import LUNA16FormatError

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "luna16")
if not os.path.isdir(REAL):
    REAL = "/work/shared/data/luna16"

UID_A = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"
UID_B = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100332161840553388986847034053"
HEAD_ANN = "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
HEAD_CAND = "seriesuid,coordX,coordY,coordZ,class\n"
HEAD_PRED = "seriesuid,coordX,coordY,coordZ,probability\n"


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return str(p)


# --------------------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def real():
    if not os.path.isdir(REAL):
        pytest.skip("real LUNA16 CSVs not available")
    return (
        luna16.read_annotations(os.path.join(REAL, "annotations.csv")),
        luna16.read_annotations(os.path.join(REAL, "annotations_excluded.csv")),
        luna16.read_seriesuids(os.path.join(REAL, "seriesuids.csv")),
    )


def test_real_annotations_counts(real):
    ann, _, uids = real
    assert len(ann) == 1186
    assert ann.xyz.shape == (1186, 3) and ann.xyz.dtype == np.float64
    assert ann.diameter_mm.shape == (1186,)
    assert len(uids) == 888 and len(set(uids)) == 888
    # every annotated scan is an evaluation scan; 601 scans have nodules (LUNA16 paper)
    assert set(ann.seriesuid.tolist()) <= set(uids)
    assert len(set(ann.seriesuid.tolist())) == 601
    # LUNA16 keeps nodules >= 3 mm; all values finite, lung-sized coordinates
    assert ann.diameter_mm.min() >= 3.0 and ann.diameter_mm.max() < 40.0
    assert np.all(np.abs(ann.xyz[:, :2]) < 500.0)  # x, y within a body's width
    assert np.all(np.abs(ann.xyz[:, 2]) < 2000.0)  # z: table positions vary by scanner
    # first row equals the file's text
    with open(os.path.join(REAL, "annotations.csv"), encoding="utf-8") as f:
        f.readline()
        first = f.readline().strip().split(",")
    assert ann.seriesuid[0] == first[0]
    np.testing.assert_array_equal(ann.xyz[0], [float(v) for v in first[1:4]])
    assert ann.diameter_mm[0] == float(first[4])


def test_real_excluded(real):
    ann, exc, uids = real
    with open(os.path.join(REAL, "annotations_excluded.csv"), encoding="utf-8") as f:
        n_rows = sum(1 for line in f if line.strip()) - 1
    assert len(exc) == n_rows
    assert set(exc.seriesuid.tolist()) <= set(uids)
    # -1 marks unknown diameter; the rest are positive
    d = exc.diameter_mm
    assert np.all((d == -1) | (d > 0))
    assert np.any(d == -1)


def test_for_uid(real):
    ann, _, _ = real
    sub = ann.for_uid(UID_A)
    assert len(sub) >= 1 and np.all(sub.seriesuid == UID_A)
    assert len(sub) == int(np.sum(ann.seriesuid == UID_A))


# ---------------------------------------------------------------------- round trips


def test_submission_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    uids = np.array([UID_A, UID_B, UID_A])
    xyz = rng.normal(0, 100, (3, 3))
    prob = rng.uniform(0, 1, 3)
    p = str(tmp_path / "out" / "sub.csv")
    luna16.write_submission(p, uids, xyz, prob)
    with open(p, encoding="utf-8") as f:
        assert f.readline() == HEAD_PRED
    pred = luna16.read_predictions(p, known_uids=[UID_A, UID_B])
    assert pred.seriesuid.tolist() == uids.tolist()
    np.testing.assert_array_equal(pred.xyz, xyz)  # exact: repr precision
    np.testing.assert_array_equal(pred.probability, prob)
    with pytest.raises(LUNA16FormatError, match=r"sub\.csv: line 2.*not a known scan"):
        luna16.read_predictions(p, known_uids=[UID_B])


def test_submission_empty_and_bad(tmp_path):
    p = str(tmp_path / "empty.csv")
    luna16.write_submission(p, [], np.zeros((0, 3)), np.zeros(0))
    pred = luna16.read_predictions(p)
    assert len(pred) == 0 and pred.xyz.shape == (0, 3)
    with pytest.raises(ValueError, match="bad.csv"):
        luna16.write_submission(str(tmp_path / "bad.csv"), [UID_A], np.zeros((2, 3)), [0.5])
    with pytest.raises(ValueError, match="non-finite"):
        luna16.write_submission(str(tmp_path / "bad.csv"), [UID_A], np.zeros((1, 3)), [np.nan])
    with pytest.raises(LUNA16FormatError, match="path separator"):
        luna16.write_submission(str(tmp_path / "bad.csv"), ["../x"], np.zeros((1, 3)), [0.5])
    assert not os.path.exists(tmp_path / "bad.csv")


def test_candidates(tmp_path):
    p = _write(
        tmp_path,
        "candidates_V2.csv",
        HEAD_CAND + f"{UID_A},1.5,-2,3e1,1\n{UID_A},4,5,6,0\n\n{UID_B},7,8,9,1.0\n",
    )
    c = luna16.read_candidates(p)
    assert c.label.tolist() == [1, 0, 1] and c.label.dtype == np.int64
    np.testing.assert_array_equal(c.xyz[0], [1.5, -2.0, 30.0])
    assert c.for_uid(UID_B).xyz.tolist() == [[7.0, 8.0, 9.0]]


def test_column_order_and_extra_columns(tmp_path):
    p = _write(
        tmp_path,
        "a.csv",
        "diameter_mm,extra,coordZ,coordY,coordX,seriesuid\n5,foo,3,2,1," + UID_A + "\n",
    )
    a = luna16.read_annotations(p)
    np.testing.assert_array_equal(a.xyz, [[1.0, 2.0, 3.0]])
    assert a.diameter_mm.tolist() == [5.0] and a.seriesuid.tolist() == [UID_A]


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("seriesuid,coordX,coordY,coordZ\n" + UID_A + ",1,2,3\n", 1, "diameter_mm"),
        (HEAD_ANN + f"{UID_A},1,2,3,4\n{UID_A},1,abc,3,4\n", 3, "not a number"),
        (HEAD_ANN + f"{UID_A},1,2,3,nan\n", 2, "not finite"),
        (HEAD_ANN + f"{UID_A},1,2,inf,4\n", 2, "not finite"),
        (HEAD_ANN + f"{UID_A},1,2,3,4\n{UID_A},1,2\n", 3, "field"),
        (HEAD_ANN + "../../etc/passwd,1,2,3,4\n", 2, "path separator"),
        (HEAD_ANN + "a/b,1,2,3,4\n", 2, "path separator"),
        (HEAD_ANN + "a\\b,1,2,3,4\n", 2, "path separator"),
        (HEAD_ANN + "1.2..3,1,2,3,4\n", 2, "path separator"),
        (HEAD_ANN + ",1,2,3,4\n", 2, "empty seriesuid"),
        ("", 1, "empty file"),
        ("\n\n", 1, "empty file"),
    ],
)
def test_bad_annotations(tmp_path, text, line, what):
    p = _write(tmp_path, "annotations.csv", text)
    with pytest.raises(LUNA16FormatError) as e:
        luna16.read_annotations(p)
    msg = str(e.value)
    assert p in msg and f"line {line}" in msg and what in msg


def test_bad_candidates_class(tmp_path):
    p = _write(tmp_path, "candidates.csv", HEAD_CAND + f"{UID_A},1,2,3,0.5\n")
    with pytest.raises(LUNA16FormatError, match=r"candidates\.csv: line 2.*not an integer"):
        luna16.read_candidates(p)
    p = _write(tmp_path, "c2.csv", HEAD_ANN + f"{UID_A},1,2,3,1\n")
    with pytest.raises(LUNA16FormatError, match=r"c2\.csv: line 1.*class"):
        luna16.read_candidates(p)


def test_bad_predictions(tmp_path):
    p = _write(tmp_path, "pred.csv", HEAD_PRED + f"{UID_A},1,2,3,NaN\n")
    with pytest.raises(LUNA16FormatError, match=r"pred\.csv: line 2.*probability"):
        luna16.read_predictions(p)


def test_seriesuids_good(tmp_path):
    p = _write(tmp_path, "seriesuids.csv", f"{UID_A}\n\n{UID_B}\n")
    assert luna16.read_seriesuids(p) == [UID_A, UID_B]


@pytest.mark.parametrize(
    "text, line, what",
    [
        (f"{UID_A}\n{UID_B}\n{UID_A}\n", 3, "duplicated"),
        (f"{UID_A}\nx/../y\n", 2, "path separator"),
        ("", 1, "empty file"),
    ],
)
def test_bad_seriesuids(tmp_path, text, line, what):
    p = _write(tmp_path, "seriesuids.csv", text)
    with pytest.raises(LUNA16FormatError) as e:
        luna16.read_seriesuids(p)
    assert p in str(e.value) and f"line {line}" in str(e.value) and what in str(e.value)


def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.csv")
    with pytest.raises(LUNA16FormatError, match="nope.csv"):
        luna16.read_annotations(p)


# --------------------------------------------------------------------------- dataset


def _touch_scan(root, subset, uid):
    d = root / f"subset{subset}"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{uid}.mhd").write_text("")
    return str(d / f"{uid}.mhd")


def test_dataset_layout(tmp_path):
    _touch_scan(tmp_path, 0, "1.1")
    _touch_scan(tmp_path, 0, "1.2")
    _touch_scan(tmp_path, 3, "1.3")
    _touch_scan(tmp_path, 9, "1.4")
    (tmp_path / "subset3" / "1.3.raw").write_text("")  # not a header
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "9.9.mhd").write_text("")  # not a subset folder
    _write(tmp_path, "annotations.csv", HEAD_ANN + "1.1,1,2,3,4\n")
    _write(tmp_path, "candidates_V2.csv", HEAD_CAND + "1.1,1,2,3,1\n1.2,1,2,3,0\n")
    _write(tmp_path, "candidates.csv", HEAD_CAND)
    ds = luna16.Luna16Dataset(tmp_path)
    assert ds.uids() == ["1.1", "1.2", "1.3", "1.4"] and len(ds) == 4
    assert ds.uids(folds=[0]) == ["1.1", "1.2"]
    assert ds.uids(folds=3) == ["1.3"]
    assert ds.uids(folds=(3, 9)) == ["1.3", "1.4"]
    assert ds.fold_of("1.4") == 9
    assert ds.path("1.3") == str(tmp_path / "subset3" / "1.3.mhd")
    assert len(ds.annotations) == 1
    assert ds.excluded is None and ds.seriesuids is None
    assert len(ds.candidates) == 2  # candidates_V2 preferred
    with pytest.raises(KeyError, match="9.9"):
        ds.path("9.9")
    with pytest.raises(KeyError):
        ds.fold_of("../1.1")


def test_dataset_duplicate_scan(tmp_path):
    _touch_scan(tmp_path, 1, "1.1")
    _touch_scan(tmp_path, 2, "1.1")
    with pytest.raises(LUNA16FormatError) as e:
        luna16.Luna16Dataset(tmp_path)
    assert "subset1" in str(e.value) and "subset2" in str(e.value) and "1.1.mhd" in str(e.value)


def test_dataset_bad_csv_propagates(tmp_path):
    _touch_scan(tmp_path, 0, "1.1")
    p = _write(tmp_path, "annotations.csv", HEAD_ANN + "1.1,1,2,x,4\n")
    ds = luna16.Luna16Dataset(tmp_path)
    with pytest.raises(LUNA16FormatError, match=re.escape(p + ": line 2")):
        _ = ds.annotations


def test_dataset_missing_root(tmp_path):
    with pytest.raises(LUNA16FormatError, match="nothere"):
        luna16.Luna16Dataset(tmp_path / "nothere")


def test_dataset_load(tmp_path):
    import SimpleITK as sitk

    from nodulejax.data import io

    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 2.5))  # ITK (x, y, z)
    img.SetOrigin((-10.0, 20.0, -300.0))
    (tmp_path / "subset4").mkdir()
    sitk.WriteImage(img, str(tmp_path / "subset4" / "1.2.3.mhd"))
    ds = luna16.Luna16Dataset(tmp_path)
    vol = ds.load("1.2.3")
    assert isinstance(vol, io.CTVolume)
    np.testing.assert_array_equal(vol.array, arr.astype(np.float32))
    np.testing.assert_allclose(vol.spacing, [2.5, 0.8, 0.7])
    np.testing.assert_allclose(vol.origin, [-10.0, 20.0, -300.0])
