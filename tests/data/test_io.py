"""CT IO: geometry round trips, agreement with SimpleITK, and refusal of bad input (issue 2)."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from nodulejax.data.io import CTReadError, CTVolume, load_ct, save_ct
from nodulejax.errors import CTReadError as BaseCTReadError

SHAPE = (8, 10, 12)  # (z, y, x)
SPACING = np.array([2.5, 0.7, 0.6])  # (z, y, x) mm
ORIGIN = np.array([-170.25, -160.5, -310.125])  # LPS (x, y, z) mm


def _rot(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


DIRECTIONS = {
    "identity": np.eye(3),
    "luna_flip": np.diag([-1.0, -1.0, 1.0]),  # TransformMatrix = -1 0 0 0 -1 0 0 0 1
    "z_flip": np.diag([1.0, 1.0, -1.0]),
    "oblique": _rot([1, 2, 3], 23.0),
    "oblique_improper": _rot([3, -1, 2], 41.0) @ np.diag([1.0, -1.0, 1.0]),
}
FORMATS = ["vol.mhd", "zvol.mhd", "vol.mha", "vol.nii", "vol.nii.gz"]
BRIGHT = (3, 4, 5)  # (z, y, x)


def make_volume(direction, integral=True, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 200, size=SHAPE).astype(np.float32)
    if not integral:
        arr += 0.25
    arr[BRIGHT] = 3000.0
    return CTVolume(arr, SPACING.copy(), ORIGIN.copy(), np.array(direction, float))


def _save(vol, path):
    save_ct(vol, str(path), compress=os.path.basename(str(path)).startswith("z"))


def assert_names_file(excinfo, path):
    assert isinstance(excinfo.value, BaseCTReadError)
    assert isinstance(excinfo.value, ValueError)
    assert os.fspath(path) in str(excinfo.value), str(excinfo.value)


# ---------------------------------------------------------------- pure geometry


@settings(max_examples=60, deadline=None, database=None)
@given(
    q=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1),
    flip=st.sampled_from([1.0, -1.0]),
    spacing=st.lists(st.floats(0.3, 5.0), min_size=3, max_size=3),
    origin=st.lists(st.floats(-500, 500), min_size=3, max_size=3),
    pts=st.lists(st.floats(-600, 600), min_size=12, max_size=12),
)
def test_world_voxel_round_trip_property(q, flip, spacing, origin, pts):
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    ) @ np.diag([1.0, 1.0, flip])
    vol = CTVolume(np.zeros((2, 2, 2)), np.array(spacing), np.array(origin), r)
    xyz = np.asarray(pts).reshape(4, 3)
    np.testing.assert_allclose(vol.voxel_to_world(vol.world_to_voxel(xyz)), xyz, atol=1e-6)
    zyx = xyz / 7.0
    np.testing.assert_allclose(vol.world_to_voxel(vol.voxel_to_world(zyx)), zyx, atol=1e-8)
    # single point (3,) form agrees with the batched form
    np.testing.assert_allclose(vol.world_to_voxel(xyz[1]), vol.world_to_voxel(xyz)[1])


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_geometry_matches_simpleitk_in_memory(name):
    vol = make_volume(DIRECTIONS[name])
    img = sitk.GetImageFromArray(vol.array)  # sitk takes (z, y, x) arrays too
    img.SetSpacing(tuple(vol.spacing[::-1]))
    img.SetOrigin(tuple(vol.origin))
    img.SetDirection(tuple(vol.direction.ravel()))
    zyx = np.array([[0, 0, 0], [1.5, -2.25, 7.0], [7, 9, 11]], float)
    for p in zyx:
        ref = img.TransformContinuousIndexToPhysicalPoint(tuple(p[::-1]))
        np.testing.assert_allclose(vol.voxel_to_world(p), ref, atol=1e-9)
    np.testing.assert_allclose(vol.voxel_to_world(zyx[1]), vol.voxel_to_world(zyx)[1])


# ---------------------------------------------------------------- file round trips


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("fname", FORMATS)
def test_save_load_bright_voxel(tmp_path, name, fname):
    vol = make_volume(DIRECTIONS[name])
    world = vol.voxel_to_world(np.array(BRIGHT, float))
    path = tmp_path / fname
    _save(vol, path)
    got = load_ct(path)
    assert got.path == str(path) and got.shape == SHAPE and got.array.dtype == np.float32
    np.testing.assert_array_equal(got.array, vol.array)
    # the bright voxel is where its world coordinate says
    assert np.unravel_index(np.argmax(got.array), SHAPE) == BRIGHT
    np.testing.assert_allclose(got.world_to_voxel(world), BRIGHT, atol=1e-4)
    # round trip on the loaded geometry is exact
    pts = got.voxel_to_world(np.array([[0, 0, 0], [7, 9, 11], [2.5, 3.5, -1.0]]))
    np.testing.assert_allclose(got.voxel_to_world(got.world_to_voxel(pts)), pts, atol=1e-6)
    # SimpleITK reading the same file agrees
    img = sitk.ReadImage(str(path))
    ci = img.TransformPhysicalPointToContinuousIndex(tuple(world))
    np.testing.assert_allclose(np.array(ci)[::-1], BRIGHT, atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).astype(np.float32), vol.array)


@pytest.mark.parametrize("fname", ["vol.mhd", "vol.nii.gz"])
def test_float_hu_round_trip(tmp_path, fname):
    vol = make_volume(DIRECTIONS["luna_flip"], integral=False)
    save_ct(vol, str(tmp_path / fname))
    np.testing.assert_array_equal(load_ct(tmp_path / fname).array, vol.array)
    if fname.endswith(".mhd"):
        assert "MET_FLOAT" in (tmp_path / fname).read_text()


@pytest.mark.parametrize("compress", [False, True])
def test_reads_simpleitk_written_metaimage(tmp_path, compress):
    vol = make_volume(DIRECTIONS["oblique"])
    img = sitk.GetImageFromArray(vol.array.astype(np.int16))
    img.SetSpacing(tuple(vol.spacing[::-1]))
    img.SetOrigin(tuple(vol.origin))
    img.SetDirection(tuple(vol.direction.ravel()))
    path = tmp_path / "itk.mhd"
    sitk.WriteImage(img, str(path), useCompression=compress)
    got = load_ct(path)
    np.testing.assert_array_equal(got.array, vol.array)
    np.testing.assert_allclose(got.direction, vol.direction, atol=1e-12)
    np.testing.assert_allclose(got.origin, vol.origin)
    np.testing.assert_allclose(got.spacing, vol.spacing)


def write_mhd(folder, fields, payload, name="bad.mhd", data_name="bad.raw"):
    """Hand-written MetaImage header (fields override the defaults) plus data file."""
    base = {
        "ObjectType": "Image",
        "NDims": "3",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "False",
        "CompressedData": "False",
        "TransformMatrix": "1 0 0 0 1 0 0 0 1",
        "Offset": "0 0 0",
        "ElementSpacing": "1 1 1",
        "DimSize": "4 3 2",
        "ElementType": "MET_SHORT",
        "ElementDataFile": data_name,
    }
    base.update(fields)
    edf = base.pop("ElementDataFile")
    text = "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)
    text += f"ElementDataFile = {edf}\n"
    path = folder / name
    path.write_text(text)
    if payload is not None:
        (folder / data_name).write_bytes(payload)
    return path


GOOD = np.arange(24, dtype="<i2").reshape(2, 3, 4) - 5


def test_big_endian_metaimage(tmp_path):
    path = write_mhd(tmp_path, {"BinaryDataByteOrderMSB": "True"}, GOOD.astype(">i2").tobytes())
    np.testing.assert_array_equal(load_ct(path).array, GOOD)
    path = write_mhd(tmp_path, {}, GOOD.tobytes(), name="le.mhd")
    np.testing.assert_array_equal(load_ct(path).array, GOOD)


def test_metaimage_intensity_slope(tmp_path):
    fields = {"ElementToIntensityFunctionSlope": "2", "ElementToIntensityFunctionOffset": "-1024"}
    path = write_mhd(tmp_path, fields, GOOD.tobytes())
    np.testing.assert_array_equal(load_ct(path).array, GOOD * 2.0 - 1024)


# ---------------------------------------------------------------- bad MetaImage input

_F = np.zeros((2, 3, 4), "<f4")
_NAN = _F.copy()
_NAN[1, 2, 3] = np.nan
_INF = _F.copy()
_INF[0, 0, 0] = -np.inf
BAD_MHD = {
    "truncated_raw": ({}, GOOD.tobytes()[:-6]),
    "raw_larger_than_dimsize": ({}, GOOD.tobytes() + b"\0\0"),
    "dimsize_inconsistent": ({"DimSize": "4 3 3"}, GOOD.tobytes()),
    "elementtype_inconsistent": ({"ElementType": "MET_INT"}, GOOD.tobytes()),
    "elementtype_unknown": ({"ElementType": "MET_QUATERNION"}, GOOD.tobytes()),
    "channels": ({"ElementNumberOfChannels": "3"}, GOOD.tobytes() * 3),
    "absurd_dims": ({"DimSize": "100000 100000 100000"}, GOOD.tobytes()),
    "large_dims_tiny_file": ({"DimSize": "1000 1000 500"}, GOOD.tobytes()),  # under budget
    "ndims_2": ({"NDims": "2", "DimSize": "4 6"}, GOOD.tobytes()),
    "edf_absolute": ({"ElementDataFile": "/etc/passwd"}, GOOD.tobytes()),
    "edf_dotdot": ({"ElementDataFile": "../bad.raw"}, GOOD.tobytes()),
    "edf_dotdot_inner": ({"ElementDataFile": "sub/../../x.raw"}, GOOD.tobytes()),
    "edf_list": ({"ElementDataFile": "LIST"}, GOOD.tobytes()),
    "edf_missing": ({"ElementDataFile": "nothere.raw"}, GOOD.tobytes()),
    "nan_voxel": ({"ElementType": "MET_FLOAT"}, _NAN.tobytes()),
    "inf_voxel": ({"ElementType": "MET_FLOAT"}, _INF.tobytes()),
    "transform_singular": ({"TransformMatrix": "1 0 0 1 0 0 0 0 1"}, GOOD.tobytes()),
    "transform_nan": ({"TransformMatrix": "1 0 0 0 nan 0 0 0 1"}, GOOD.tobytes()),
    "transform_non_orthogonal": ({"TransformMatrix": "1 0 0 0.3 1 0 0 0 1"}, GOOD.tobytes()),
    "spacing_zero": ({"ElementSpacing": "1 0 1"}, GOOD.tobytes()),
    "no_elementdatafile": ({"ElementDataFile": None}, GOOD.tobytes()),
}


@pytest.mark.parametrize("case", list(BAD_MHD))
def test_bad_metaimage_refused(tmp_path, case):
    fields, payload = BAD_MHD[case]
    if case == "no_elementdatafile":
        path = tmp_path / "bad.mhd"
        path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\n")
    else:
        path = write_mhd(tmp_path, fields, payload)
    with pytest.raises(CTReadError) as ei:
        load_ct(path)
    assert_names_file(ei, path)


def test_absurd_dims_refused_by_budget_not_by_size(tmp_path):
    # data consistent with DimSize, but over a small budget: refused before reading
    path = write_mhd(tmp_path, {}, GOOD.tobytes())
    with pytest.raises(CTReadError, match="budget") as ei:
        load_ct(path, max_voxels=23)
    assert_names_file(ei, path)
    assert load_ct(path, max_voxels=24).shape == (2, 3, 4)


@pytest.mark.parametrize("how", ["flipped_bytes", "truncated", "not_zlib"])
def test_corrupt_zraw_refused(tmp_path, how):
    vol = make_volume(np.eye(3), seed=3)
    path = tmp_path / "c.mhd"
    save_ct(vol, str(path), compress=True)
    z = tmp_path / "c.zraw"
    data = bytearray(z.read_bytes())
    if how == "flipped_bytes":
        for i in range(10, len(data) - 10, 7):
            data[i] ^= 0xA5
    elif how == "truncated":
        data = data[: len(data) // 2]
        text = path.read_text().replace(
            [ln for ln in path.read_text().splitlines() if "CompressedDataSize" in ln][0], ""
        )
        path.write_text(text)
    else:
        data = bytearray(b"not a zlib stream at all" * 10)
        path.write_text(path.read_text().replace("CompressedDataSize", "X_CompressedDataSize"))
    z.write_bytes(bytes(data))
    with pytest.raises(CTReadError) as ei:
        load_ct(path)
    assert_names_file(ei, path)


def test_truncated_mha_refused(tmp_path):
    path = tmp_path / "v.mha"
    save_ct(make_volume(np.eye(3)), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CTReadError) as ei:
        load_ct(path)
    assert_names_file(ei, path)


def test_unknown_format_and_missing_path(tmp_path):
    for p in [tmp_path / "x.png", tmp_path / "missing.mhd"]:
        if p.suffix == ".png":
            p.write_bytes(b"\x89PNG")
        with pytest.raises(CTReadError) as ei:
            load_ct(p)
        assert_names_file(ei, p)


# ---------------------------------------------------------------- NIfTI


def _nifti(tmp_path, data_xyz, sform=None, qform=None, name="n.nii", header=None):
    img = nib.Nifti1Image(data_xyz, None, header=header)
    if sform is not None:
        img.set_sform(sform[0], code=sform[1])
    else:
        img.set_sform(np.eye(4), code=0)
    if qform is not None:
        img.set_qform(qform[0], code=qform[1])
    else:
        img.set_qform(np.eye(4), code=0)
    path = tmp_path / name
    nib.save(img, str(path))
    return path


RAW_XYZ = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
AFF = np.array([[0.7, 0, 0, -10], [0, 0.8, 0, 20], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])


def test_nifti_ras_to_lps_conversion(tmp_path):
    path = _nifti(tmp_path, RAW_XYZ, sform=(AFF, 1))
    v = load_ct(path)
    np.testing.assert_array_equal(v.array, RAW_XYZ.transpose(2, 1, 0))
    np.testing.assert_allclose(v.origin, [10, -20, 30])  # RAS (-10, 20, 30) -> LPS
    np.testing.assert_allclose(v.spacing, [2.5, 0.8, 0.7])
    np.testing.assert_allclose(v.direction, np.diag([-1, -1, 1.0]))
    # voxel (i, j, k) = (2, 1, 3) is RAS (-8.6, 20.8, 37.5) = LPS (8.6, -20.8, 37.5)
    np.testing.assert_allclose(v.voxel_to_world([3, 1, 2]), [8.6, -20.8, 37.5], atol=1e-5)


def test_nifti_qform_only_and_agreeing_forms(tmp_path):
    a = load_ct(_nifti(tmp_path, RAW_XYZ, qform=(AFF, 1), name="q.nii"))
    b = load_ct(_nifti(tmp_path, RAW_XYZ, sform=(AFF, 1), qform=(AFF, 2), name="qs.nii"))
    for v in (a, b):
        np.testing.assert_allclose(v.origin, [10, -20, 30], atol=1e-5)


def _patch_scaling(path, slope, inter):
    """Write scl_slope / scl_inter straight into a .nii header (nibabel's save resets them)."""
    data = bytearray(path.read_bytes())
    data[112:120] = np.array([slope, inter], "<f4").tobytes()  # NIfTI-1 byte offsets 112, 116
    path.write_bytes(bytes(data))
    with open(path, "rb") as f:
        hdr = nib.Nifti1Header.from_fileobj(f)
    assert np.array_equal([hdr["scl_slope"], hdr["scl_inter"]], [slope, inter], equal_nan=True)


@pytest.mark.parametrize("slope", [0.0, np.nan])
def test_nifti_slope_zero_or_nan_means_no_scaling(tmp_path, slope):
    path = _nifti(tmp_path, RAW_XYZ, sform=(AFF, 1))
    _patch_scaling(path, slope, -1024.0)
    np.testing.assert_array_equal(load_ct(path).array, RAW_XYZ.transpose(2, 1, 0))


def test_nifti_slope_applied(tmp_path):
    path = _nifti(tmp_path, RAW_XYZ, sform=(AFF, 1))
    _patch_scaling(path, 2.0, -1024.0)
    np.testing.assert_array_equal(load_ct(path).array, RAW_XYZ.transpose(2, 1, 0) * 2.0 - 1024)


@pytest.mark.parametrize("slope,inter", [(np.inf, 0.0), (1.0, np.nan)])
def test_nifti_unusable_scaling_refused(tmp_path, slope, inter):
    path = _nifti(tmp_path, RAW_XYZ, sform=(AFF, 1))
    _patch_scaling(path, slope, inter)
    with pytest.raises(CTReadError) as ei:
        load_ct(path)
    assert_names_file(ei, path)


def test_nifti_big_endian(tmp_path):
    hdr = nib.Nifti1Header(endianness=">")
    path = _nifti(tmp_path, RAW_XYZ.astype(">i2"), sform=(AFF, 1), header=hdr, name="be.nii")
    assert path.read_bytes()[:4] == (348).to_bytes(4, "big")  # really big-endian on disk
    np.testing.assert_array_equal(load_ct(path).array, RAW_XYZ.transpose(2, 1, 0))


_SHEAR = AFF.copy()
_SHEAR[0, 1] = 0.4
_SING = AFF.copy()
_SING[:, 2] = 0.0
_OTHER = AFF.copy()
_OTHER[0, 3] += 5.0
BAD_NII = {
    "qform_sform_disagree": dict(sform=(AFF, 1), qform=(_OTHER, 1)),
    "no_qform_no_sform": dict(),
    "shear_affine": dict(sform=(_SHEAR, 2)),
    "singular_affine": dict(sform=(_SING, 2)),
    "nan_affine": dict(sform=(AFF, 2)),  # srow_y[1] set to NaN on disk below
}


@pytest.mark.parametrize("case", list(BAD_NII))
def test_bad_nifti_geometry_refused(tmp_path, case):
    path = _nifti(tmp_path, RAW_XYZ, **BAD_NII[case])
    if case == "nan_affine":  # nibabel refuses to save a NaN affine: patch srow_y[1] (byte 300)
        data = bytearray(path.read_bytes())
        data[300:304] = np.array([np.nan], "<f4").tobytes()
        path.write_bytes(bytes(data))
        with open(path, "rb") as f:
            assert np.isnan(nib.Nifti1Header.from_fileobj(f)["srow_y"][1])
    with pytest.raises(CTReadError) as ei:
        load_ct(path)
    assert_names_file(ei, path)


@pytest.mark.parametrize("name", ["t.nii.gz", "t.nii"])
def test_truncated_nifti_refused(tmp_path, name):
    vol = make_volume(DIRECTIONS["oblique"], seed=5)
    path = tmp_path / name
    save_ct(vol, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(CTReadError) as ei:
        load_ct(path)
    assert_names_file(ei, path)


def test_corrupt_nifti_gz_refused(tmp_path):
    path = tmp_path / "c.nii.gz"
    save_ct(make_volume(np.eye(3), seed=6), str(path))
    data = bytearray(path.read_bytes())
    for i in range(200, len(data) - 20, 5):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(CTReadError) as ei:
        load_ct(path)
    assert_names_file(ei, path)


def test_nifti_nan_voxels_and_budget(tmp_path):
    d = RAW_XYZ.astype(np.float32)
    d[1, 1, 1] = np.nan
    path = _nifti(tmp_path, d, sform=(AFF, 1), name="nan.nii.gz")
    with pytest.raises(CTReadError, match="NaN") as ei:
        load_ct(path)
    assert_names_file(ei, path)
    path = _nifti(tmp_path, RAW_XYZ, sform=(AFF, 1), name="ok.nii")
    with pytest.raises(CTReadError, match="budget") as ei:
        load_ct(path, max_voxels=59)
    assert_names_file(ei, path)


# ---------------------------------------------------------------- DICOM

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
            "0008|0060": "CT",
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
    r = _rot([1, 1, 0], 20.0)
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


def test_save_refuses_bad_geometry(tmp_path):
    vol = make_volume(np.array([[1, 0.2, 0], [0, 1, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError):
        save_ct(vol, str(tmp_path / "x.mhd"))
    assert not (tmp_path / "x.mhd").exists()
