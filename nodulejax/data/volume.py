"""`CTVolume` (HU voxels + ITK geometry, exact world <-> voxel) and the checks every reader applies.

Conventions:

* ``CTVolume.array`` is float32 Hounsfield units in ``(z, y, x)`` order (slowest to fastest).
* ``spacing`` is ``(z, y, x)`` millimetres.
* ``origin`` is the world position ``(x, y, z)`` in LUNA16/ITK LPS millimetres of voxel
  ``(0, 0, 0)``.
* ``direction`` is the ITK direction matrix: column ``j`` is the world ``(x, y, z)`` unit
  vector of ITK index axis ``j``, where ITK indexes ``(x, y, z)`` = our array axes ``(2, 1, 0)``.

So, with ``i_xyz = zyx[::-1]`` and ``s_xyz = spacing[::-1]``::

    world_xyz = origin + direction @ diag(s_xyz) @ i_xyz            (ITK's definition)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nodulejax.errors import CTReadError

__all__ = ["CTVolume", "CTReadError", "check_geometry", "check_finite_voxels", "check_budget",
           "integral_int16", "ORTHO_TOL", "SINGULAR_TOL"]

#: max |D^T D - I| accepted for a direction matrix (float32 headers give ~1e-7).
ORTHO_TOL = 1e-4
#: |det(D)| below this is a singular direction matrix.
SINGULAR_TOL = 1e-6


@dataclass
class CTVolume:
    """One CT scan: HU voxels plus the ITK geometry that places them in LPS world space.

    Attributes:
      array: (z, y, x) float32 HU.
      spacing: (3,) float64, (z, y, x) mm.
      origin: (3,) float64, world (x, y, z) LPS mm of voxel (0, 0, 0).
      direction: (3, 3) float64 ITK direction (column j = world direction of ITK axis j,
        ITK axes (x, y, z) = our array axes (2, 1, 0)).
      path: the file or folder the volume was read from, if any.
      files: a DICOM series' slice files in array ``z`` order (empty for other formats), so
        a voxel index maps back to the file that holds it.
    """

    array: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray
    path: str | None = None
    files: tuple = ()

    def __post_init__(self):
        self.array = np.asarray(self.array, dtype=np.float32)
        self.spacing = np.asarray(self.spacing, dtype=np.float64).reshape(-1)
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(-1)
        self.direction = np.asarray(self.direction, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"CTVolume.array must be 3D (z, y, x), got shape {self.array.shape}")
        if self.spacing.shape != (3,) or self.origin.shape != (3,):
            raise ValueError("CTVolume.spacing and .origin must have shape (3,)")
        if self.direction.shape != (3, 3):
            raise ValueError(f"CTVolume.direction must be (3, 3), got {self.direction.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) voxel counts."""
        return tuple(int(n) for n in self.array.shape)

    def _matrix(self) -> np.ndarray:
        """M with world_xyz = origin + M @ index_xyz (mm per voxel, ITK index order)."""
        return self.direction * self.spacing[::-1][None, :]

    def voxel_to_world(self, zyx) -> np.ndarray:
        """(N, 3) or (3,) continuous (z, y, x) voxel indices -> world (x, y, z) LPS mm."""
        zyx = np.asarray(zyx, dtype=np.float64)
        if zyx.shape[-1:] != (3,) or zyx.ndim > 2:
            raise ValueError(f"voxel_to_world expects (3,) or (N, 3), got shape {zyx.shape}")
        ixyz = zyx[..., ::-1]
        return ixyz @ self._matrix().T + self.origin

    def world_to_voxel(self, xyz) -> np.ndarray:
        """(N, 3) or (3,) world (x, y, z) LPS mm -> continuous (z, y, x) voxel indices.

        Exact inverse of `voxel_to_world` (solves the 3x3 system; no orthogonality assumed).
        """
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.shape[-1:] != (3,) or xyz.ndim > 2:
            raise ValueError(f"world_to_voxel expects (3,) or (N, 3), got shape {xyz.shape}")
        rel = (xyz - self.origin).reshape(-1, 3)
        ixyz = np.linalg.solve(self._matrix(), rel.T).T
        return ixyz[:, ::-1].reshape(xyz.shape)


def check_geometry(path, spacing, origin, direction) -> None:
    """Raise `CTReadError` naming `path` unless spacing/origin/direction describe a valid grid.

    Spacing must be finite and > 0; origin finite; direction finite, non-singular and
    orthonormal within `ORTHO_TOL` (shear or scaling in the direction is refused).
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise CTReadError(f"{path}: voxel spacing must be finite and positive, got {spacing}")
    if not np.all(np.isfinite(origin)):
        raise CTReadError(f"{path}: origin is not finite: {origin}")
    if not np.all(np.isfinite(direction)):
        raise CTReadError(f"{path}: direction matrix has NaN/Inf entries: {direction.tolist()}")
    if abs(np.linalg.det(direction)) < SINGULAR_TOL:
        raise CTReadError(f"{path}: direction matrix is singular: {direction.tolist()}")
    err = np.max(np.abs(direction.T @ direction - np.eye(3)))
    if err > ORTHO_TOL:
        raise CTReadError(
            f"{path}: direction matrix is not orthonormal (max |D^T D - I| = {err:.3g} > "
            f"{ORTHO_TOL}; shear or scaling is not supported): {direction.tolist()}"
        )


def check_finite_voxels(path, array: np.ndarray) -> None:
    """Raise `CTReadError` if `array` holds NaN or Inf (after conversion to float32)."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise CTReadError(f"{path}: {bad} voxel(s) are NaN or Inf")


def check_budget(path, shape, max_voxels: int) -> None:
    """Raise `CTReadError` if a grid of `shape` exceeds `max_voxels` (checked before reading)."""
    n = 1
    for s in shape:
        n *= int(s)
    if n > max_voxels:
        raise CTReadError(
            f"{path}: dimensions {tuple(int(s) for s in shape)} hold {n} voxels, over the "
            f"budget max_voxels={max_voxels}; refusing to allocate"
        )


def integral_int16(array: np.ndarray) -> bool:
    """True if every value of `array` is an integer representable as int16."""
    a = np.asarray(array)
    return bool(
        a.size == 0 or (np.all(a == np.round(a)) and a.min() >= -32768 and a.max() <= 32767)
    )
