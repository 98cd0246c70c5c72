"""NIfTI-1/2 (.nii, .nii.gz) reader and writer via nibabel, converted to ITK/LPS geometry.

Affine precedence (documented contract):

1. ``sform_code > 0``: the sform is used. If ``qform_code > 0`` as well, the qform must agree
   with it (3x3 part within 1e-4 of the largest voxel size, translation within 1e-3 mm);
   disagreement is a `CTReadError` (we cannot know which one the scanner meant).
2. else ``qform_code > 0``: the qform is used.
3. else (both codes 0, NIfTI "method 1", ANALYZE-style pixdim only): refused with
   `CTReadError`, since the orientation of the patient is unknown.

The chosen affine maps (i, j, k) to RAS millimetres; flipping x and y gives LPS. Its column
norms are the (x, y, z) spacing and the normalised columns the ITK direction, which must be
orthonormal (shear, scaling or a singular affine is refused). The data array (i, j, k) is
returned transposed to (z, y, x) = (k, j, i).

Scaling: ``scl_slope`` 0 or NaN means "no scaling" (NIfTI standard), the intercept is then
ignored; a finite non-zero slope applies ``slope * raw + inter``; an infinite slope or a
non-finite intercept with a valid slope is refused. Byte order (big-endian files) is handled
by nibabel from the header. Truncated or corrupt files (gzip, EOF) raise `CTReadError`.
"""

from __future__ import annotations

import zlib

import nibabel as nib
import numpy as np

from nodulejax.data.volume import (
    CTReadError,
    CTVolume,
    check_budget,
    check_finite_voxels,
    check_geometry,
    integral_int16,
)

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_READ_ERRORS = (
    EOFError,
    OverflowError,  # nibabel's int(vox_offset) on an infinite offset
    zlib.error,
    OSError,
    ValueError,
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
)


def _choose_affine(path: str, hdr) -> np.ndarray:
    try:  # nibabel raises ValueError for a quaternion (b, c, d) of norm > 1
        sform, scode = hdr.get_sform(coded=True)
        qform, qcode = hdr.get_qform(coded=True)
    except _READ_ERRORS as e:
        raise CTReadError(f"{path}: NIfTI qform/sform unusable: {type(e).__name__}: {e}") from e
    if scode and scode > 0:
        if qcode and qcode > 0:
            for name, a in (("sform", sform), ("qform", qform)):
                if not np.all(np.isfinite(a)):
                    raise CTReadError(f"{path}: NIfTI {name} has NaN/Inf entries")
            scale = max(np.linalg.norm(sform[:3, :3], axis=0).max(), 1e-12)
            d3 = np.abs(sform[:3, :3] - qform[:3, :3]).max()
            dt = np.abs(sform[:3, 3] - qform[:3, 3]).max()
            if d3 > 1e-4 * scale or dt > 1e-3:
                raise CTReadError(
                    f"{path}: NIfTI qform and sform disagree (3x3 by {d3:.3g}, translation by "
                    f"{dt:.3g} mm); sform={sform[:3].tolist()} qform={qform[:3].tolist()}"
                )
        return np.asarray(sform, dtype=np.float64)
    if qcode and qcode > 0:
        return np.asarray(qform, dtype=np.float64)
    raise CTReadError(
        f"{path}: NIfTI has sform_code = qform_code = 0 (no patient orientation); refusing to "
        "guess the geometry"
    )


def affine_to_itk(path: str, affine: np.ndarray):
    """RAS (i, j, k) affine -> (spacing_zyx, origin_xyz LPS, ITK direction); validated."""
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a[:3])):
        raise CTReadError(f"{path}: NIfTI affine has NaN/Inf entries: {a[:3].tolist()}")
    m = _RAS_TO_LPS @ a[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(m)) < 1e-9 * np.prod(norms):
        raise CTReadError(f"{path}: NIfTI affine is singular: {a[:3].tolist()}")
    direction = m / norms
    origin = _RAS_TO_LPS @ a[:3, 3]
    check_geometry(path, norms[::-1], origin, direction)
    return norms[::-1].copy(), origin, direction


def read_nifti(path: str, *, max_voxels: int = 1_000_000_000) -> CTVolume:
    """Read a .nii/.nii.gz into a `CTVolume` (float32 HU, (z, y, x), LPS); see module doc."""
    try:
        img = nib.load(path, mmap=False)
        hdr = img.header
        shape = tuple(int(s) for s in hdr.get_data_shape())
    except _READ_ERRORS as e:
        raise CTReadError(f"{path}: cannot read NIfTI header: {type(e).__name__}: {e}") from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair)):
        raise CTReadError(f"{path}: not a NIfTI image ({type(img).__name__})")
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise CTReadError(f"{path}: NIfTI shape {shape}; need a 3D volume")
    if min(shape[:3]) < 1:
        raise CTReadError(f"{path}: NIfTI shape {shape} has an empty axis")
    check_budget(path, shape[:3], max_voxels)
    spacing, origin, direction = affine_to_itk(path, _choose_affine(path, hdr))

    # nibabel moves the scaling into the array proxy and blanks it in img.header, so read the
    # on-disk header fields again.
    try:
        with nib.openers.ImageOpener(path) as f:
            disk = img.header_class.from_fileobj(f)
    except _READ_ERRORS as e:
        raise CTReadError(f"{path}: cannot read NIfTI header: {type(e).__name__}: {e}") from e
    slope = float(disk["scl_slope"])
    inter = float(disk["scl_inter"])
    if np.isinf(slope):
        raise CTReadError(f"{path}: NIfTI scl_slope is infinite")
    scaled = slope != 0 and np.isfinite(slope)
    if scaled and not np.isfinite(inter):
        raise CTReadError(f"{path}: NIfTI scl_slope = {slope} with non-finite scl_inter {inter}")
    try:
        raw = np.asarray(img.dataobj.get_unscaled())
    except _READ_ERRORS as e:
        raise CTReadError(
            f"{path}: NIfTI voxel data is truncated or corrupt: {type(e).__name__}: {e}"
        ) from e
    if raw.dtype.kind not in "biuf" or raw.dtype.fields is not None:
        raise CTReadError(f"{path}: NIfTI data type {raw.dtype} is not a scalar real type")
    raw = raw.reshape(shape[:3])
    if scaled:
        arr = (raw.astype(np.float64) * slope + inter).astype(np.float32)
    else:
        arr = raw.astype(np.float32)
    arr = np.ascontiguousarray(arr.transpose(2, 1, 0))
    check_finite_voxels(path, arr)
    return CTVolume(arr, spacing, origin, direction, path=path)


def itk_to_affine(volume: CTVolume) -> np.ndarray:
    """4x4 RAS affine mapping NIfTI (i, j, k) = our (x, y, z) index to RAS mm."""
    a = np.eye(4)
    a[:3, :3] = _RAS_TO_LPS @ (volume.direction * volume.spacing[::-1][None, :])
    a[:3, 3] = _RAS_TO_LPS @ volume.origin
    return a


def write_nifti(volume: CTVolume, path: str) -> None:
    """Write `volume` as NIfTI-1 with sform = qform (code 1, scanner), units mm, no scaling.

    int16 when every HU is an integer within int16, float32 otherwise.
    """
    arr = volume.array
    dtype = np.int16 if integral_int16(arr) else np.float32
    data = np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(dtype)
    affine = itk_to_affine(volume)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(dtype)
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    nib.save(img, path)
