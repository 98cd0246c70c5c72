"""What the CT reader tests share (test_io, test_metaimage, test_nifti, test_dicom,
test_volume): a small volume with one bright voxel in any orientation, rotation matrices, and
the check that an error names its file."""

from __future__ import annotations

import os

import numpy as np

from nodulejax.data.volume import CTVolume
from nodulejax.errors import CTReadError

SHAPE = (8, 10, 12)  # (z, y, x)
SPACING = np.array([2.5, 0.7, 0.6])  # (z, y, x) mm
ORIGIN = np.array([-170.25, -160.5, -310.125])  # LPS (x, y, z) mm


def rot(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


DIRECTIONS = {
    "identity": np.eye(3),
    "luna_flip": np.diag([-1.0, -1.0, 1.0]),  # TransformMatrix = -1 0 0 0 -1 0 0 0 1
    "z_flip": np.diag([1.0, 1.0, -1.0]),
    "oblique": rot([1, 2, 3], 23.0),
    "oblique_improper": rot([3, -1, 2], 41.0) @ np.diag([1.0, -1.0, 1.0]),
}
BRIGHT = (3, 4, 5)  # (z, y, x)


def make_volume(direction, integral=True, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 200, size=SHAPE).astype(np.float32)
    if not integral:
        arr += 0.25
    arr[BRIGHT] = 3000.0
    return CTVolume(arr, SPACING.copy(), ORIGIN.copy(), np.array(direction, float))


def assert_names_file(excinfo, path):
    assert isinstance(excinfo.value, CTReadError)
    assert isinstance(excinfo.value, ValueError)
    assert os.fspath(path) in str(excinfo.value), str(excinfo.value)
