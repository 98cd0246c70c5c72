"""Detection on one scan of one's own (``python -m nodulejax.detection detect``).

A ``.mhd``/``.mha``, ``.nii``/``.nii.gz`` or DICOM series folder is read with the project's
readers (``data.io.load_ct``, with their checks: a non-CT DICOM series, a sheared stack, a
folder of several series without ``--series UID`` are refused), prepared exactly as the study
prepares its scans (``data.prepare.prepare_volume``: resampled to the model's spacing, HU
window, lung mask) and run through the study's detector (``detector.generate_candidates``
then ``detector.score_candidates``, the functions ``run.detect_scans`` calls), so a scan gives
the candidates and scores the study would give it.

Every candidate is mapped back to world LPS mm (``coordX, coordY, coordZ``, the LUNA16
convention) and to the voxel indices of the original file (``voxelX, voxelY, voxelZ`` = the
file's i, j, k; for DICOM k is the slice in position order along the slice normal and
``file`` names its slice file). ``source`` says which network proposed it: ``blob`` (the
all-nodule heatmap), ``GGO`` (the ground-glass heatmap was the higher one at that voxel),
``RPN`` (a box of the RPN head), or both joined with ``+``. ``diameter_mm`` is an estimate
from the image: twice the radius at which fewer than half the voxels of a spherical shell
around the centre are denser than -600 HU (capped at 30 mm).

Outputs (written to a temporary folder beside ``--out`` and moved into place at the end, so
a refused input writes nothing): ``detections.csv`` (the findings at or above the threshold,
by descending probability), ``candidates.csv`` (every scored candidate),
``finding_NN.png`` (axial, coronal and sagittal slices through finding NN, a box, the score),
``overview.png`` (a coronal maximum intensity projection of the lungs with the findings) and
``report.md`` (all of it in order of probability).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import shutil
import sys
import time

import numpy as np

from nodulejax.data import io, preprocess
from nodulejax.data.dicom import SeveralSeriesError
from nodulejax.data.prepare import PreparedScan, prepare_volume
from nodulejax.detection import detector as dt
from nodulejax.detection import views
from nodulejax.detection.export import DetectorModel, move_into_place, temp_beside
from nodulejax.errors import ConfigError, CTReadError

DENSE_HU = -600.0  # a voxel of a nodule (solid or ground glass) is denser than this
MAX_DIAMETER_MM = 30.0
COLUMNS = ("rank", "seriesuid", "coordX", "coordY", "coordZ", "probability", "source",
           "diameter_mm", "voxelX", "voxelY", "voxelZ", "file")


@dataclasses.dataclass
class Findings:
    """Every scored candidate of one scan, by descending probability.

    zyx: (N, 3) voxel indices of the prepared grid; world: (N, 3) LPS mm (x, y, z);
    voxel: (N, 3) continuous (z, y, x) voxel indices of the original file; probability,
    cg_score, diameter_mm: (N,); flags: (N,) int (1 blob, 2 RPN, 3 both); source: (N,) names;
    file: (N,) DICOM slice file of each (empty for other formats)."""

    uid: str
    scan: PreparedScan
    zyx: np.ndarray
    world: np.ndarray
    voxel: np.ndarray
    probability: np.ndarray
    cg_score: np.ndarray
    flags: np.ndarray
    source: np.ndarray
    diameter_mm: np.ndarray
    file: np.ndarray

    def __len__(self) -> int:
        return len(self.probability)

    def above(self, threshold: float) -> np.ndarray:
        return np.flatnonzero(self.probability >= threshold)


@contextlib.contextmanager
def _bar(desc: str, total: int, progress: bool):
    """A tqdm bar on stderr for one stage; erased when the stage fails, so a refused input
    leaves its one-line error alone on the terminal."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    try:
        yield bar
    except BaseException:
        bar.leave = False
        bar.close()
        raise
    bar.close()


# ----------------------------------------------------------------------------- input
def scan_name(path: str) -> str:
    """A scan's name from its path: the file name without extension (a LUNA16 .mhd is named
    by its seriesuid) or the DICOM folder's name."""
    base = os.path.basename(os.path.normpath(path))
    for ext in (".nii.gz", ".nii", ".mhd", ".mha"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def read_scan(path: str, series: str | None = None) -> io.CTVolume:
    """``data.io.load_ct`` with the CLI's words: a folder of several series names them and
    ``--series UID``; ``--series`` with a file is refused."""
    path = os.fspath(path)
    if series is not None and not os.path.isdir(path):
        raise ConfigError(f"--series {series}: only a DICOM folder has series; {path} is a file")
    try:
        return io.load_ct(path, series=series)
    except SeveralSeriesError as e:
        raise CTReadError(f"{path}: folder holds {len(e.uids)} DICOM series "
                          f"({', '.join(e.uids)}); pick one with --series UID") from None


def check_size(volume: io.CTVolume, config) -> None:
    """CTReadError unless the scan, resampled to the model's spacing, is at least one FPR
    patch along every axis (a smaller scan cannot hold what the model was trained on)."""
    sp = float(config.data.spacing)
    shape = preprocess.resampled_shape(volume.shape, volume.spacing, sp)
    p = int(config.fpr.patch_size)
    if min(shape) < p:
        mm = " x ".join(f"{(n - 1) * s:.0f}" for n, s in zip(volume.shape, volume.spacing,
                                                            strict=True))
        raise CTReadError(
            f"{volume.path}: scan too small for the model: {mm} mm (z, y, x), "
            f"{' x '.join(map(str, shape))} voxels at {sp:g} mm; the model needs at least {p} "
            f"voxels ({p * sp:g} mm) along every axis (its FPR patch)")


def prepare(volume: io.CTVolume, config, uid: str) -> PreparedScan:
    return prepare_volume(volume, spacing=float(config.data.spacing),
                          window=tuple(config.data.hu_window), uid=uid)


# ----------------------------------------------------------------------------- detection
def source_names(flags, zyx, maps) -> np.ndarray:
    """``blob`` / ``GGO`` / ``RPN`` (joined with ``+``) per candidate (see module doc)."""
    out = []
    shape = np.asarray(maps["all"].shape)
    for f, c in zip(np.asarray(flags), np.asarray(zyx), strict=True):
        parts = []
        if f & dt.SOURCE_BLOB:
            v = tuple(np.clip(np.round(c).astype(int), 0, shape - 1))
            parts.append("GGO" if maps["ggo"][v] > maps["all"][v] else "blob")
        if f & dt.SOURCE_RPN:
            parts.append("RPN")
        out.append("+".join(parts))
    return np.array(out, dtype=object)


def estimate_diameter(image, zyx, spacing: float, level: float,
                      max_mm: float = MAX_DIAMETER_MM) -> float:
    """Twice the radius (mm) where fewer than half the voxels of a spherical shell (one voxel
    thick) around ``zyx`` exceed ``level`` ([0, 1] windowed); 0 when the centre voxel does
    not, ``max_mm`` when no shell within ``max_mm / 2`` drops."""
    r_max = int(np.ceil(max_mm / 2.0 / spacing)) + 1
    c = np.asarray(zyx, np.float64)
    lo = np.floor(c).astype(int) - r_max
    idx = [np.arange(lo[a], lo[a] + 2 * r_max + 2) for a in range(3)]
    valid = [(i >= 0) & (i < n) for i, n in zip(idx, image.shape, strict=True)]
    sub = np.zeros([len(i) for i in idx], np.float32)
    sub[np.ix_(*valid)] = image[np.ix_(*[i[v] for i, v in zip(idx, valid, strict=True)])]
    g = np.meshgrid(*[(i - c[a]) for a, i in enumerate(idx)], indexing="ij")
    dist = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)  # voxels
    dense = sub > level
    if not dense[tuple(np.clip(np.round(c).astype(int) - lo, 0, 2 * r_max + 1))]:
        return 0.0
    for k in range(1, r_max + 1):
        shell = (dist >= k - 0.5) & (dist < k + 0.5)
        if shell.any() and dense[shell].mean() < 0.5:
            return float(min(2.0 * (k - 0.5) * spacing, max_mm))
    return float(max_mm)


def find_nodules(model, scan: PreparedScan, *, progress: bool = False) -> Findings:
    """Every candidate of a prepared scan, scored by the model's FPR (the study's detector:
    ``generate_candidates`` and ``score_candidates``), by descending probability.
    ``model``: a :class:`~nodulejax.detection.export.DetectorModel` (or anything with
    ``config``, ``cg_params`` and ``fpr_params``)."""
    config = model.config
    maps: dict = {}
    with _bar("candidates", 1, progress) as bar:
        zyx, cg_score, flags = dt.generate_candidates(model.cg_params, config, scan, progress,
                                                      maps=maps)
        bar.update(1)
    source = source_names(flags, zyx, maps)
    del maps  # the two whole-scan heatmaps go before scoring (memory)
    bsz = dt.score_batch_size(config)
    chunks = range(0, len(zyx), bsz)
    probs = []
    with _bar("scoring", len(chunks), progress) as bar:
        for b0 in chunks:  # score_candidates' own batches: the same scores as one call
            probs.append(dt.score_candidates(model.fpr_params, config, scan,
                                             zyx[b0: b0 + bsz]))
            bar.update(1)
    prob = np.concatenate(probs) if probs else np.zeros(0)
    order = np.argsort(-prob, kind="stable")
    zyx, cg_score, flags, prob, source = (zyx[order], cg_score[order], flags[order],
                                          prob[order], source[order])
    world = dt.to_world(scan, zyx)
    src = scan.extra.get("source", scan.geometry)
    voxel = np.atleast_2d(src.world_to_voxel(world)) if len(world) else np.zeros((0, 3))
    lo, hi = (float(v) for v in config.data.hu_window)
    level = float(np.clip((DENSE_HU - lo) / (hi - lo), 0.0, 1.0))
    diam = np.array([estimate_diameter(scan.image, c, scan.spacing, level) for c in zyx])
    files = getattr(src, "files", ()) or ()
    kk = np.round(voxel[:, 0]).astype(int) if len(voxel) else np.zeros(0, int)
    file = np.array([os.path.basename(files[k]) if files and 0 <= k < len(files) else ""
                     for k in kk], dtype=object)
    return Findings(uid=scan.uid, scan=scan, zyx=zyx, world=world, voxel=voxel,
                    probability=prob, cg_score=np.asarray(cg_score, np.float64),
                    flags=np.asarray(flags), source=source,
                    diameter_mm=diam, file=file)


# ----------------------------------------------------------------------------- outputs
def write_csv(path: str, f: Findings, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for rank, i in enumerate(rows, start=1):
            ix, iy, iz = (int(v) for v in np.round(f.voxel[i][::-1]))
            w.writerow([rank, f.uid, *(f"{v:.3f}" for v in f.world[i]),
                        f"{f.probability[i]:.6f}", f.source[i], f"{f.diameter_mm[i]:.1f}",
                        ix, iy, iz, f.file[i]])


def default_out(path: str) -> str:
    return os.path.abspath(f"{scan_name(path)}_nodules")


def detect_file(model: DetectorModel, path: str, out: str | None = None, *,
                series: str | None = None, threshold: float | None = None,
                overwrite: bool = False, progress: bool = True) -> dict:
    """Detect nodules in the scan at ``path`` and write the outputs of the module docstring
    to ``out`` (default ``./<scan name>_nodules``). ``threshold``: default the model's
    (detector.json). Returns a summary (counts, threshold and its rule, seconds)."""
    t0 = time.perf_counter()
    out = os.path.abspath(out or default_out(path))
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it or choose "
                          "another folder")
    if threshold is None:
        threshold, rule = model.threshold, model.threshold_rule
    else:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"--threshold {threshold}: a probability in [0, 1]")
        rule = "set by --threshold"
    with _bar("read", 1, progress) as bar:
        vol = read_scan(path, series)
        bar.update(1)
    check_size(vol, model.config)
    with _bar("prepare", 1, progress) as bar:
        scan = prepare(vol, model.config, series or scan_name(path))
        bar.update(1)
    shape = vol.shape
    del vol
    f = find_nodules(model, scan, progress=progress)
    rows = f.above(threshold)
    tmp = temp_beside(out)
    try:
        write_csv(os.path.join(tmp, "detections.csv"), f, rows)
        write_csv(os.path.join(tmp, "candidates.csv"), f, range(len(f)))
        pngs = []
        with _bar("images", len(rows) + 1, progress) as bar:
            views.overview_png(f, rows, os.path.join(tmp, "overview.png"), threshold)
            bar.update(1)
            for rank, i in enumerate(rows, start=1):
                name = f"finding_{rank:02d}.png"
                views.finding_png(f, i, rank, os.path.join(tmp, name))
                pngs.append(name)
                bar.update(1)
        seconds = time.perf_counter() - t0
        summary = {"scan": os.path.abspath(path), "uid": f.uid, "out": out,
                   "shape": list(shape), "prepared_shape": list(scan.image.shape),
                   "spacing_mm": scan.spacing, "n_candidates": len(f),
                   "n_findings": int(len(rows)), "threshold": float(threshold),
                   "threshold_rule": rule, "model": model.folder,
                   "model_digest": model.digest, "fpr_model": model.info.get("fpr_model"),
                   "seconds_per_scan": round(seconds, 2)}
        views.write_report(os.path.join(tmp, "report.md"), f, rows, pngs, summary)
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
