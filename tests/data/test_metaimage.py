"""nodulejax.data.metaimage: MetaImage (.mhd + .raw/.zraw, .mha) headers and data refused or read
faithfully."""


import numpy as np
import pytest
import SimpleITK as sitk

from nodulejax.data.io import CTReadError, load_ct, save_ct
from tests.data.helpers import DIRECTIONS, assert_names_file, make_volume


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

_F = np.zeros((2, 3, 4), "<f4")

_NAN = _F.copy()

_INF = _F.copy()
_NAN[1, 2, 3] = np.nan
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
