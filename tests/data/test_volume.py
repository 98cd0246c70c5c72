"""nodulejax.data.volume: CTVolume geometry (ITK convention) and exact world <-> voxel."""

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from nodulejax.data.volume import CTVolume
from tests.data.helpers import DIRECTIONS, make_volume


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
