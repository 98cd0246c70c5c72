"""CT volume IO: `load_ct` and `save_ct` pick the reader / writer by the path.

Readers live in `nodulejax.data.metaimage` (.mhd/.mha), `nodulejax.data.nifti`
(.nii/.nii.gz, RAS affines converted to LPS) and `nodulejax.data.dicom` (series folders); the
volume type and its coordinate conventions in `nodulejax.data.volume`. Every problem with a
file is raised as `CTReadError` (a ``ValueError``) whose message names the file and what is
wrong with it; a reader refuses anything it cannot read faithfully.
"""

from __future__ import annotations

import os

from nodulejax.data import dicom, metaimage, nifti
from nodulejax.data.volume import CTReadError, CTVolume, check_finite_voxels, check_geometry

__all__ = ["CTVolume", "CTReadError", "load_ct", "save_ct"]


def _kind(path: str) -> str:
    low = path.lower()
    if os.path.isdir(path):
        return "dicom"
    if low.endswith((".mhd", ".mha")):
        return "metaimage"
    if low.endswith((".nii", ".nii.gz")):
        return "nifti"
    return ""


def load_ct(path, *, max_voxels: int = 1_000_000_000, series: str | None = None) -> CTVolume:
    """Read a CT volume: MetaImage (.mhd + .raw/.zraw, .mha), NIfTI (.nii, .nii.gz) or a DICOM
    series folder (``series``: the SeriesInstanceUID to read when the folder holds several).
    Returns float32 HU (z, y, x) with LPS geometry; see the module docstring.

    Raises `CTReadError` (naming the file) for anything that cannot be read faithfully, including
    volumes over `max_voxels` (checked from the header, before any allocation).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CTReadError(f"{path}: no such file or folder")
    kind = _kind(path)
    if kind in ("metaimage", "nifti") and not os.path.isfile(path):  # a FIFO would block
        raise CTReadError(f"{path}: not a regular file (a pipe or device?); refusing to read it")
    if kind == "metaimage":
        return metaimage.read_metaimage(path, max_voxels=max_voxels)
    if kind == "nifti":
        return nifti.read_nifti(path, max_voxels=max_voxels)
    if kind == "dicom":
        return dicom.read_dicom_series(path, max_voxels=max_voxels, series=series)
    raise CTReadError(
        f"{path}: unknown CT format (expected .mhd, .mha, .nii, .nii.gz or a DICOM folder)"
    )


def save_ct(volume: CTVolume, path, *, compress: bool = False) -> None:
    """Write `volume` as MetaImage (.mhd + .raw, or + .zraw when `compress`; .mha) or NIfTI
    (.nii, .nii.gz; LPS geometry converted to a RAS sform = qform, both code 1).

    Integral HU within int16 are stored as int16 (MET_SHORT), anything else as float32.
    """
    path = os.fspath(path)
    check_geometry(path, volume.spacing, volume.origin, volume.direction)
    check_finite_voxels(path, volume.array)
    kind = _kind(path) if not os.path.isdir(path) else ""
    if kind == "metaimage":
        metaimage.write_metaimage(volume, path, compress=compress)
    elif kind == "nifti":
        nifti.write_nifti(volume, path)
    else:
        raise CTReadError(f"{path}: save_ct writes .mhd, .mha, .nii or .nii.gz")
