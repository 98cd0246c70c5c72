"""DICOM series folder reader (SimpleITK / GDCM), with the geometry checks GDCM does not make.

A folder must hold exactly one series (``GetGDCMSeriesIDs``), or the caller names one
(``series=UID``); several without a choice are refused (:class:`SeveralSeriesError`, naming
their SeriesInstanceUIDs). Only CT is read: a series whose Modality (0008,0060) is anything
but ``CT`` (an MR, PET or secondary capture series holds no Hounsfield units) is refused; a
slice without the tag is accepted. Before any voxel is read, each slice's header is checked:
same size and ImageOrientationPatient (IOP) on every slice, orthonormal row/column cosines,
and ImagePositionPatient (IPP) projected on the slice normal ``n = row x col`` giving distinct,
evenly spaced positions (a gap about twice the median step is reported as a missing slice,
other variation above 1 % as uneven spacing). Slice offsets perpendicular to ``n`` mean the
stack is sheared (gantry tilt) and are refused. Rescale slope/intercept are applied by
SimpleITK, so the array is HU. SimpleITK loads on the first read, not at import: its ~90 MB
would otherwise sit in every process that imports ``nodulejax.data`` (the PGD engine and the
training loop do, through their packages; benchmarks/RESULTS.md, "What a JAX process imports").

Geometry: origin = IPP of the first slice along ``n``; direction columns (row, col, n);
in-plane spacing from PixelSpacing; slice spacing = (last - first position) / (N - 1).
"""

from __future__ import annotations

import numpy as np

from nodulejax.data.volume import (
    CTReadError,
    CTVolume,
    check_budget,
    check_finite_voxels,
    check_geometry,
)


def _floats(path, fname, reader, tag, n) -> np.ndarray:
    if not reader.HasMetaDataKey(tag):
        raise CTReadError(f"{path}: slice {fname} has no tag {tag}")
    text = reader.GetMetaData(tag)
    try:
        out = np.array([float(t) for t in text.strip().split("\\")], dtype=np.float64)
    except ValueError:
        raise CTReadError(f"{path}: slice {fname} tag {tag} = {text!r} is not numeric") from None
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise CTReadError(f"{path}: slice {fname} tag {tag} = {text!r}; need {n} finite numbers")
    return out


class SeveralSeriesError(CTReadError):
    """A DICOM folder holds several series and none was chosen; ``uids`` lists them."""

    def __init__(self, message: str, uids):
        super().__init__(message)
        self.uids = tuple(uids)


def _check_modality(path, fname, reader) -> None:
    if not reader.HasMetaDataKey("0008|0060"):
        return
    modality = reader.GetMetaData("0008|0060").strip()
    if modality.upper() != "CT":
        raise CTReadError(f"{path}: slice {fname} has Modality {modality!r}, not CT: its values "
                          "are not Hounsfield units; only CT series are read")


def _slice_info(path: str, files):
    import SimpleITK as sitk

    sizes, ipps, iops = [], [], []
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            raise CTReadError(f"{path}: cannot read DICOM slice {f}: {e}") from e
        _check_modality(path, f, r)
        sizes.append(tuple(r.GetSize()[:2]))
        ipps.append(_floats(path, f, r, "0020|0032", 3))  # ImagePositionPatient
        iops.append(_floats(path, f, r, "0020|0037", 6))  # ImageOrientationPatient
    return sizes, np.array(ipps), np.array(iops)


def read_dicom_series(path: str, *, max_voxels: int = 1_000_000_000,
                      series: str | None = None) -> CTVolume:
    """Read the single DICOM series in folder `path` (or the one whose SeriesInstanceUID is
    `series`) into a `CTVolume` (float32 HU, LPS; ``files``: the slices in ``z`` order)."""
    import SimpleITK as sitk

    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(path)
    except RuntimeError as e:
        raise CTReadError(f"{path}: cannot scan DICOM folder: {e}") from e
    if not ids:
        raise CTReadError(f"{path}: no DICOM series found in folder")
    ids = list(ids)
    if series is not None:
        if series not in ids:
            raise CTReadError(f"{path}: no DICOM series {series} in the folder; it holds "
                              f"{', '.join(ids)}")
        ids = [series]
    if len(ids) > 1:
        raise SeveralSeriesError(
            f"{path}: folder holds {len(ids)} DICOM series ({', '.join(ids)}); put each series "
            "in its own folder", ids)
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path, ids[0]))
    if len(files) < 2:
        raise CTReadError(f"{path}: DICOM series {ids[0]} has {len(files)} slice(s); need >= 2")
    sizes, ipp, iop = _slice_info(path, files)
    if len(set(sizes)) != 1:
        raise CTReadError(f"{path}: DICOM slices differ in size: {sorted(set(sizes))}")
    if np.abs(iop - iop[0]).max() > 1e-4:
        raise CTReadError(f"{path}: ImageOrientationPatient differs between slices")
    row, col = iop[0, :3], iop[0, 3:]
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(col) - 1) > 1e-3
        or abs(row @ col) > 1e-3
    ):
        raise CTReadError(f"{path}: ImageOrientationPatient {iop[0].tolist()} is not orthonormal")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)

    pos = ipp @ normal
    order = np.argsort(pos, kind="stable")
    pos, ipp = pos[order], ipp[order]
    files = [files[i] for i in order]
    steps = np.diff(pos)
    if np.any(steps < 1e-3):
        k = int(np.argmin(steps))
        raise CTReadError(
            f"{path}: slices {files[k]} and {files[k + 1]} are at the same position "
            f"{pos[k]:.4f} mm along the slice normal"
        )
    perp = (ipp - ipp[0]) - np.outer(pos - pos[0], normal)
    off = np.linalg.norm(perp, axis=1)
    if np.any(off > 1e-2 + 1e-4 * (pos - pos[0])):
        k = int(np.argmax(off))
        raise CTReadError(
            f"{path}: gantry tilt / sheared stack: slice {files[k]} is offset {off[k]:.4f} mm "
            "perpendicular to the slice normal (row x column of ImageOrientationPatient)"
        )
    med = float(np.median(steps))
    dev = np.abs(steps - med)
    if np.any(dev > 0.01 * med + 1e-3):
        k = int(np.argmax(dev))
        what = (
            "missing slice"
            if abs(steps[k] / med - round(steps[k] / med)) < 0.05 and steps[k] > 1.5 * med
            else "uneven slice spacing"
        )
        raise CTReadError(
            f"{path}: {what}: step {steps[k]:.4f} mm between {files[k]} and {files[k + 1]}, "
            f"median step {med:.4f} mm"
        )
    nx, ny = sizes[0]
    check_budget(path, (len(files), ny, nx), max_voxels)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise CTReadError(f"{path}: cannot read DICOM series {ids[0]}: {e}") from e
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    if arr.shape != (len(files), ny, nx):
        raise CTReadError(
            f"{path}: DICOM series read as {arr.shape}, expected {(len(files), ny, nx)}"
        )
    check_finite_voxels(path, arr)
    sx, sy = img.GetSpacing()[:2]
    sz = (pos[-1] - pos[0]) / (len(files) - 1)
    spacing = np.array([sz, sy, sx])
    direction = np.column_stack([row, col, normal])
    check_geometry(path, spacing, ipp[0], direction)
    return CTVolume(arr, spacing, ipp[0].copy(), direction, path=path, files=tuple(files))
