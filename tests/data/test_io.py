"""CT IO: geometry round trips, agreement with SimpleITK, and refusal of bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from nodulejax.data.io import CTReadError, load_ct, save_ct
from tests.data.helpers import (
    BRIGHT,
    DIRECTIONS,
    SHAPE,
    assert_names_file,
    make_volume,
)

FORMATS = ["vol.mhd", "zvol.mhd", "vol.mha", "vol.nii", "vol.nii.gz"]


def _save(vol, path):
    save_ct(vol, str(path), compress=os.path.basename(str(path)).startswith("z"))


# ---------------------------------------------------------------- pure geometry


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



def test_unknown_format_and_missing_path(tmp_path):
    for p in [tmp_path / "x.png", tmp_path / "missing.mhd"]:
        if p.suffix == ".png":
            p.write_bytes(b"\x89PNG")
        with pytest.raises(CTReadError) as ei:
            load_ct(p)
        assert_names_file(ei, p)


# ---------------------------------------------------------------- NIfTI




# ---------------------------------------------------------------- DICOM


def test_save_refuses_bad_geometry(tmp_path):
    vol = make_volume(np.array([[1, 0.2, 0], [0, 1, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError):
        save_ct(vol, str(tmp_path / "x.mhd"))
    assert not (tmp_path / "x.mhd").exists()
