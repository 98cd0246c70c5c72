"""Prepared scans on disk, read by crop: the cache behind :mod:`nodulejax.data.prepare`.

At the paper's 0.625 mm a LUNA16 scan is ~150 M voxels; the 888 scans do not fit in RAM, so
the study keeps them on disk and every consumer reads what it needs (a 64^3 patch, a training
crop, one axial slice of the lung mask) by index. One scan is a folder::

    SCAN/image.npy   (Z, Y, X) float16   windowed image in [0, 1] (read back as float32)
    SCAN/lung.npy    (Z, B) uint8        lung mask, each axial slice bit-packed (np.packbits of
                                         its Y * X voxels, big bit order; B = ceil(Y * X / 8))
    SCAN/meta.npz    spacing, origin, direction (the grid), lung_counts (Z,) int64 (lung voxels
                     per slice), mask_source (N,) str, and the nodule labels as boxes:
                     seg_present (bool), seg_shape (3,), seg_boxes (K, 6) int64 (z0, y0, x0,
                     z1, y1, x1 per label's bounding box), seg_offsets (K + 1,), seg_data
                     (concatenated uint8 box contents)

written to a hidden temp folder and renamed into place (a killed writer leaves no scan). On
disk a 150 M voxel scan is ~300 MB of image, ~19 MB of lung mask and a few kB of labels.

The readers are lazy arrays (:class:`DiskImage`, :class:`PackedMask`, :class:`BoxLabels`):
``.shape``, ``.dtype``, ``a[z-slice, y-slice, x-slice]`` reads just that block (the image
through a memory map opened for the read and dropped after it, so touched pages do not stay
in the process's resident memory; the mask's packed slices by row,
:class:`~nodulejax.data.records.RecordArray`), ``np.asarray(a)`` reads the whole volume.
Values are exactly the arrays that were written (the image at the float16 precision
``prepare_arrays`` already rounds to), so a stage reading crops gets the numbers it got from
the in-memory scan.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from nodulejax.data.records import RecordArray
from nodulejax.errors import WorkdirError

__all__ = ["DiskImage", "PackedMask", "BoxLabels", "write_scan", "read_scan", "scan_complete",
           "lung_slice_counts", "lung_voxels"]

_FILES = ("image.npy", "lung.npy", "meta.npz")


def _index(key, shape):
    """``key`` (int, slice, tuple of them, Ellipsis) -> per-axis int index arrays or ints."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape):
        raise IndexError(f"too many indices for a {len(shape)}-d array: {key}")
    out = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            out.append(np.arange(n)[k])
        elif isinstance(k, (int, np.integer)):
            if not -n <= int(k) < n:
                raise IndexError(f"index {int(k)} out of range for an axis of {n}")
            out.append(int(k) % n)
        else:
            raise TypeError(f"lazy scan arrays take ints and slices, got {type(k).__name__}")
    return out


def _apply(block, idx, lo):
    """Index ``block`` (holding rows ``lo[a]:`` of each axis) with :func:`_index`'s result."""
    key = []
    for a, k in enumerate(idx):
        if isinstance(k, int):
            key.append(k - lo[a])
        elif len(k) and np.all(np.diff(k) == 1):
            key.append(slice(int(k[0]) - lo[a], int(k[-1]) + 1 - lo[a]))
        else:
            key.append(k - lo[a])
    # mixed fancy indices broadcast together in numpy; apply them one axis at a time
    out = block
    for a in reversed(range(len(key))):
        k = key[a]
        if isinstance(k, np.ndarray):
            out = np.take(out, k, axis=a)
        else:
            out = out[(slice(None),) * a + (k,)]
    # ``block`` is the reader's own array: copy only a strided view of it
    return out.copy() if isinstance(out, np.ndarray) and not out.flags.c_contiguous else \
        np.asarray(out)


def _bounds(idx):
    lo, hi = [], []
    for k in idx:
        if isinstance(k, int):
            lo.append(k)
            hi.append(k + 1)
        elif len(k):
            lo.append(int(k.min()))
            hi.append(int(k.max()) + 1)
        else:
            lo.append(0)
            hi.append(0)
    return lo, hi


class _Lazy(np.lib.mixins.NDArrayOperatorsMixin):
    """Base of the lazy arrays: ``a[...]`` reads a block (subclasses); numpy operators and
    ufuncs (``a == 3``, ``~a``, ``np.where(a, ...)``) and the reductions below read the whole
    volume first, so every expression gives the in-memory array's result."""

    ndim = 3
    __array_priority__ = 20

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        return self[...].astype(dtype or self.dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, _Lazy) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))



def _whole(name: str):
    """``_Lazy.<name>``: the ndarray method of the whole volume (read first)."""
    def method(self, *args, **kwargs):
        return getattr(np.asarray(self), name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in ("astype", "min", "max", "sum", "mean", "any", "all"):
    setattr(_Lazy, _name, _whole(_name))


def _open(path, mode="r"):
    try:
        return np.load(path, mmap_mode=mode, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise WorkdirError(f"{path}: unreadable prepared-scan array ({type(e).__name__}: {e}); "
                           "delete the scan's cache folder to prepare it again") from e


class DiskImage(_Lazy):
    """Lazy ``(Z, Y, X)`` image of ``image.npy`` (float16 on disk), read as ``dtype``."""

    def __init__(self, path: str, dtype=np.float32):
        self.path = path
        m = _open(path)
        if m.ndim != 3:
            raise WorkdirError(f"{path}: expected a (Z, Y, X) image, got shape {m.shape}")
        self.shape, self.dtype = tuple(m.shape), np.dtype(dtype)
        del m

    def __getitem__(self, key) -> np.ndarray:
        idx = _index(key, self.shape)
        lo, hi = _bounds(idx)
        m = _open(self.path)
        try:
            block = np.array(m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], self.dtype)  # a copy
        finally:
            del m
        return _apply(block, idx, lo)


class PackedMask(_Lazy):
    """Lazy ``(Z, Y, X)`` bool mask of ``lung.npy`` (each axial slice bit-packed), with its
    per-slice voxel counts ``counts (Z,) int64``."""

    dtype = np.dtype(bool)

    def __init__(self, path: str, shape, counts):
        self.path, self.shape = path, tuple(int(v) for v in shape)
        self.counts = np.asarray(counts, np.int64)
        self._rows = RecordArray(path)  # one row per axial slice, read by row
        nbytes = -(-self.shape[1] * self.shape[2] // 8)
        if self._rows.shape != (self.shape[0], nbytes) or len(self.counts) != self.shape[0]:
            raise WorkdirError(f"{path}: packed mask {self._rows.shape} / {len(self.counts)} "
                               f"slice counts do not fit the scan's grid {self.shape}")

    def __getitem__(self, key) -> np.ndarray:
        idx = _index(key, self.shape)
        lo, hi = _bounds(idx)
        rows = self._rows[lo[0]:hi[0]]
        n = self.shape[1] * self.shape[2]
        block = np.unpackbits(rows, axis=1, count=n).astype(bool).reshape(
            (hi[0] - lo[0],) + self.shape[1:])
        return _apply(block, idx, [lo[0], 0, 0])

    def any(self, *a, **k):
        return bool(self.counts.sum() > 0) if not a and not k else super().any(*a, **k)


class BoxLabels(_Lazy):
    """``(Z, Y, X) uint8`` nodule labels held as their bounding boxes (a few kB per scan):
    ``boxes (K, 6)`` (z0, y0, x0, z1, y1, x1), ``blocks`` the labels inside each box."""

    dtype = np.dtype(np.uint8)

    def __init__(self, shape, boxes, blocks):
        self.shape, self.boxes, self.blocks = tuple(int(v) for v in shape), boxes, blocks

    @classmethod
    def from_array(cls, seg: np.ndarray) -> BoxLabels:
        from scipy import ndimage

        seg = np.asarray(seg, np.uint8)
        boxes, blocks = [], []
        for i, box in enumerate(ndimage.find_objects(seg)):  # one pass over the volume
            if box is None:
                continue
            block = seg[box]
            boxes.append([s.start for s in box] + [s.stop for s in box])
            blocks.append(np.where(block == i + 1, block, 0).astype(np.uint8))
        return cls(seg.shape, np.asarray(boxes, np.int64).reshape(-1, 6), blocks)

    def __getitem__(self, key) -> np.ndarray:
        idx = _index(key, self.shape)
        lo, hi = _bounds(idx)
        block = np.zeros(tuple(b - a for a, b in zip(lo, hi, strict=True)), np.uint8)
        for box, data in zip(self.boxes, self.blocks, strict=True):
            a = np.maximum(box[:3], lo)
            b = np.minimum(box[3:], hi)
            if np.any(b <= a):
                continue
            src = data[a[0] - box[0]:b[0] - box[0], a[1] - box[1]:b[1] - box[1],
                       a[2] - box[2]:b[2] - box[2]]
            dst = block[a[0] - lo[0]:b[0] - lo[0], a[1] - lo[1]:b[1] - lo[1],
                        a[2] - lo[2]:b[2] - lo[2]]
            np.copyto(dst, src, where=(src > 0) & (dst == 0))
        return _apply(block, idx, lo)

    def max(self, *a, **k):
        if a or k:
            return super().max(*a, **k)
        return np.uint8(max((int(b.max()) for b in self.blocks if b.size), default=0))

    def relabel(self, lut: np.ndarray) -> BoxLabels:
        return BoxLabels(self.shape, self.boxes, [np.asarray(lut, np.uint8)[b] for b in
                                                   self.blocks])


def lung_slice_counts(lung) -> np.ndarray:
    """Lung voxels per axial slice, ``(Z,) int64``, of an in-memory or packed mask."""
    if isinstance(lung, PackedMask):
        return lung.counts
    m = np.asarray(lung, bool)
    return m.reshape(m.shape[0], -1).sum(1).astype(np.int64)


def lung_voxels(lung, ks, counts=None) -> np.ndarray:
    """The ``ks``-th lung voxels ``(len(ks), 3) int64`` (z, y, x) in C order: row ``k`` of
    ``np.argwhere(lung)``, reading only the slices that hold them."""
    counts = lung_slice_counts(lung) if counts is None else counts
    ks = np.asarray(ks, np.int64).reshape(-1)
    cum = np.cumsum(counts)
    if len(ks) and (ks.min() < 0 or ks.max() >= (cum[-1] if len(cum) else 0)):
        raise IndexError(f"lung voxel index out of range [0, {int(cum[-1]) if len(cum) else 0})")
    z = np.searchsorted(cum, ks, side="right")
    out = np.zeros((len(ks), 3), np.int64)
    for zi in np.unique(z):
        flat = np.flatnonzero(np.asarray(lung[int(zi)], bool))
        sel = z == zi
        r = ks[sel] - (cum[zi] - counts[zi])
        yx = np.stack(np.unravel_index(flat[r], lung.shape[1:]), 1)
        out[sel, 0], out[sel, 1:] = zi, yx
    return out


def scan_complete(folder: str) -> bool:
    """Whether ``folder`` holds a finished scan (the writer renames it into place last)."""
    return all(os.path.isfile(os.path.join(folder, f)) for f in _FILES)


def write_scan(folder: str, image, lung, seg, **meta) -> None:
    """Write one prepared scan to ``folder`` (module docstring), atomically.

    ``image (Z, Y, X)`` float in [0, 1] (stored float16), ``lung`` bool, ``seg`` uint8 labels
    or None; ``meta``: small arrays (spacing, origin, direction, mask_source)."""
    image = np.asarray(image)
    lung = np.asarray(lung, bool)
    if lung.shape != image.shape or (seg is not None and np.shape(seg) != image.shape):
        raise WorkdirError(f"{folder}: lung {lung.shape} / labels "
                           f"{None if seg is None else np.shape(seg)} differ from the image "
                           f"{image.shape}")
    parent, base = os.path.split(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        np.save(os.path.join(tmp, "image.npy"), image.astype(np.float16))
        packed = np.packbits(lung.reshape(lung.shape[0], -1), axis=1)
        np.save(os.path.join(tmp, "lung.npy"), packed)
        labels = BoxLabels.from_array(seg) if seg is not None else BoxLabels(image.shape, np.zeros(
            (0, 6), np.int64), [])
        sizes = [b.size for b in labels.blocks]
        np.savez(os.path.join(tmp, "meta.npz"), lung_counts=lung_slice_counts(lung),
                 seg_present=np.array(seg is not None), seg_shape=np.array(image.shape),
                 seg_boxes=labels.boxes, seg_offsets=np.concatenate([[0], np.cumsum(sizes)]
                                                                    ).astype(np.int64),
                 seg_data=(np.concatenate([b.ravel() for b in labels.blocks])
                           if labels.blocks else np.zeros(0, np.uint8)), **meta)
        for f in _FILES:
            with open(os.path.join(tmp, f), "rb") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(folder, ignore_errors=True)  # a stale partial folder of an old writer
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_scan(folder: str) -> dict:
    """The lazy arrays of a scan folder: ``image`` (:class:`DiskImage`), ``lung``
    (:class:`PackedMask`), ``seg`` (:class:`BoxLabels` or None) and the ``meta.npz`` arrays.
    A missing or malformed file is a WorkdirError naming it."""
    if not scan_complete(folder):
        raise WorkdirError(f"{folder}: not a prepared scan (missing "
                           f"{[f for f in _FILES if not os.path.isfile(os.path.join(folder, f))]})")
    path = os.path.join(folder, "meta.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise WorkdirError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    need = ("lung_counts", "seg_present", "seg_shape", "seg_boxes", "seg_offsets", "seg_data")
    if any(k not in meta for k in need):
        raise WorkdirError(f"{path}: lacks {[k for k in need if k not in meta]}")
    image = DiskImage(os.path.join(folder, "image.npy"))
    lung = PackedMask(os.path.join(folder, "lung.npy"), image.shape, meta.pop("lung_counts"))
    boxes, off, data = meta.pop("seg_boxes"), meta.pop("seg_offsets"), meta.pop("seg_data")
    seg = None
    if bool(meta.pop("seg_present")):
        if len(off) != len(boxes) + 1 or off[-1] != len(data):
            raise WorkdirError(f"{path}: label boxes and their data disagree")
        blocks = [data[off[i]:off[i + 1]].reshape(tuple(b[3:] - b[:3]))
                  for i, b in enumerate(boxes)]
        seg = BoxLabels(meta["seg_shape"], boxes, blocks)
    meta.pop("seg_shape")
    return dict(image=image, lung=lung, seg=seg, **meta)
