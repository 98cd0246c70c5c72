"""nodulejax.data.dicom: DICOM series folders: geometry, oblique series, refusals."""

import os

import numpy as np
import pytest
import SimpleITK as sitk

from nodulejax.data.io import CTReadError, load_ct
from tests.data.helpers import assert_names_file, rot

DCM_ARR = (np.arange(6 * 5 * 7).reshape(6, 5, 7) % 300 - 100).astype(np.int16)

def write_dicom_series(
    folder,
    arr=DCM_ARR,
    positions=None,
    series="1.2.826.0.1.3680043.2.1125.1",
    iop=(1, 0, 0, 0, 1, 0),
    spacing_xy=(0.7, 0.8),
    prefix="s",
    intercept=None,
    modality="CT",
):
    """One DICOM file per slice with SimpleITK's GDCM writer (tags set per slice)."""
    folder.mkdir(exist_ok=True)
    nz = arr.shape[0]
    if positions is None:
        normal = np.cross(iop[:3], iop[3:])
        positions = [np.array([-50.0, 30.0, 100.0]) + 2.0 * k * normal for k in range(nz)]
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for k in range(nz):
        s = sitk.GetImageFromArray(arr[k])
        s.SetSpacing(spacing_xy)
        tags = {
            "0008|0060": modality,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series,
            "0020|0037": "\\".join(str(float(v)) for v in iop),
            "0020|0032": "\\".join(repr(float(v)) for v in positions[k]),
            "0020|0013": str(k + 1),
            "0008|0018": f"{series}.{k + 1}",
        }
        if intercept is not None:
            tags["0028|1052"] = str(intercept)
            tags["0028|1053"] = "1"
        for t, v in tags.items():
            s.SetMetaData(t, v)
        w.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        w.Execute(s)
    return folder

@pytest.mark.parametrize("reverse_z", [False, True])
def test_dicom_series_geometry(tmp_path, reverse_z):
    iop = (1, 0, 0, 0, 1, 0)
    pos = [np.array([-50.0, 30.0, 100.0 + (-2.0 if reverse_z else 2.0) * k]) for k in range(6)]
    folder = write_dicom_series(tmp_path / "dcm", positions=pos, iop=iop, intercept=-1024)
    v = load_ct(folder)
    expect = DCM_ARR[::-1] if reverse_z else DCM_ARR  # slices sorted along the normal (+z)
    np.testing.assert_array_equal(v.array, expect.astype(np.float32))
    np.testing.assert_allclose(v.spacing, [2.0, 0.8, 0.7])
    np.testing.assert_allclose(v.origin, [-50.0, 30.0, 90.0 if reverse_z else 100.0])
    np.testing.assert_allclose(v.direction, np.eye(3))
    ref = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    w = v.voxel_to_world([2, 3, 4])
    np.testing.assert_allclose(
        ref.TransformPhysicalPointToContinuousIndex(tuple(w)), [4, 3, 2], atol=1e-6
    )
    pydicom = pytest.importorskip("pydicom")
    stored = pydicom.dcmread(str(folder / "s000.dcm")).pixel_array
    np.testing.assert_array_equal(stored.astype(np.int32) - 1024, DCM_ARR[0])  # rescale applied

def test_dicom_oblique_series(tmp_path):
    r = rot([1, 1, 0], 20.0)
    iop = tuple(r[:, 0]) + tuple(r[:, 1])
    folder = write_dicom_series(tmp_path / "ob", iop=iop)
    v = load_ct(folder)
    np.testing.assert_allclose(v.direction, r, atol=1e-6)
    pts = v.voxel_to_world(np.array([[0, 0, 0], [5, 4, 6.5]]))
    np.testing.assert_allclose(v.voxel_to_world(v.world_to_voxel(pts)), pts, atol=1e-6)

def _bad_dicom(tmp_path, case):
    folder = tmp_path / case
    base = [np.array([-50.0, 30.0, 100.0 + 2.0 * k]) for k in range(6)]
    if case == "several_series":
        write_dicom_series(folder, series="1.2.3.100")
        write_dicom_series(folder, series="1.2.3.200", prefix="t")
    elif case == "missing_slice":
        write_dicom_series(folder)
        os.remove(folder / "s003.dcm")
    elif case == "uneven_spacing":
        base[4] = base[4] + np.array([0, 0, 0.7])
        base[5] = base[5] + np.array([0, 0, 0.7])
        write_dicom_series(folder, positions=base)
    elif case == "gantry_tilt":
        tilted = [p + np.array([0.0, 0.35 * k, 0.0]) for k, p in enumerate(base)]
        write_dicom_series(folder, positions=tilted)
    elif case == "duplicate_position":
        base[3] = base[2]
        write_dicom_series(folder, positions=base)
    elif case == "empty_folder":
        folder.mkdir()
        (folder / "readme.txt").write_text("no dicom here")
    return folder

@pytest.mark.parametrize(
    "case",
    [
        "several_series",
        "missing_slice",
        "uneven_spacing",
        "gantry_tilt",
        "duplicate_position",
        "empty_folder",
    ],
)
def test_bad_dicom_refused(tmp_path, case):
    folder = _bad_dicom(tmp_path, case)
    with pytest.raises(CTReadError) as ei:
        load_ct(folder)
    assert_names_file(ei, folder)
    msg = str(ei.value)
    if case == "several_series":
        assert "1.2.3.100" in msg and "1.2.3.200" in msg
    if case == "missing_slice":
        assert "missing slice" in msg
    if case == "uneven_spacing":
        assert "uneven" in msg
    if case == "gantry_tilt":
        assert "tilt" in msg


def test_series_is_chosen_by_uid_and_the_slices_kept_in_z_order(tmp_path):
    folder = _bad_dicom(tmp_path, "several_series")
    v = load_ct(folder, series="1.2.3.200")
    np.testing.assert_array_equal(v.array, DCM_ARR.astype(np.float32))
    assert [os.path.basename(f) for f in v.files] == [f"t{k:03d}.dcm" for k in range(6)]
    with pytest.raises(CTReadError) as ei:
        load_ct(folder, series="1.2.3.999")
    assert "1.2.3.999" in str(ei.value) and "1.2.3.100" in str(ei.value)


def test_several_series_error_lists_the_uids(tmp_path):
    from nodulejax.data.dicom import SeveralSeriesError

    with pytest.raises(SeveralSeriesError) as ei:
        load_ct(_bad_dicom(tmp_path, "several_series"))
    assert set(ei.value.uids) == {"1.2.3.100", "1.2.3.200"}


@pytest.mark.parametrize("modality", ["MR", "PT"])
def test_a_series_that_is_not_ct_is_refused(tmp_path, modality):
    """An MR series' values are not HU: before this check it was read as if they were."""
    folder = write_dicom_series(tmp_path / "mr", modality=modality)
    with pytest.raises(CTReadError) as ei:
        load_ct(folder)
    assert_names_file(ei, folder)
    assert f"Modality '{modality}'" in str(ei.value) and "not CT" in str(ei.value)
