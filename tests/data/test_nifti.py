"""nodulejax.data.nifti: NIfTI (.nii, .nii.gz) RAS affines to LPS, scaling, refusals."""


import nibabel as nib
import numpy as np
import pytest

from nodulejax.data.io import CTReadError, load_ct, save_ct
from tests.data.helpers import DIRECTIONS, assert_names_file, make_volume


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

_SING = AFF.copy()

_OTHER = AFF.copy()
_SHEAR[0, 1] = 0.4
_SING[:, 2] = 0.0
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
