"""Patch extraction at voxel or world centres, and flip / 90-degree-rotation augmentation.

The FPR classifier sees 64^3 patches at 0.625 mm around each candidate (paper Section 3.1,
Table 2) and is trained with flips and 90-degree rotations. Host-side numpy only.

Centre convention: a continuous centre ``c`` (voxel index, ``(z, y, x)``) is rounded half up,
``ci = floor(c + 0.5)``, and a patch of size ``P`` covers indices ``[ci - P // 2,
ci - P // 2 + P)`` on that axis, so the centre voxel lands at patch index ``P // 2`` (for
even ``P``, the voxel just past the middle). Voxels outside the volume are ``pad_value``.
"""

from __future__ import annotations

import itertools

import numpy as np

from nodulejax.data.scanstore import BoxLabels, DiskImage, PackedMask
from nodulejax.data.volume import CTVolume

#: Volumes read block by block (a cached prepared scan's arrays): patches are cut from them
#: without reading the whole volume.
_LAZY = (DiskImage, PackedMask, BoxLabels)

__all__ = [
    "patch_start",
    "extract_patch",
    "extract_patches",
    "extract_patch_world",
    "extract_patches_world",
    "symmetry",
    "NUM_SYMMETRIES",
    "random_flip_rot",
    "random_flip_rot_batch",
]


def _size3(size) -> tuple[int, int, int]:
    s = tuple(int(v) for v in np.broadcast_to(np.asarray(size), (3,)))
    if any(v <= 0 for v in s):
        raise ValueError(f"patch size must be positive, got {size}")
    return s


def patch_start(center_zyx, size) -> np.ndarray:
    """First voxel index ``floor(c + 0.5) - P // 2`` of the patch(es): ``(3,)`` or ``(N, 3)``
    centres -> int64 of the same shape."""
    c = np.asarray(center_zyx, dtype=np.float64)
    if c.shape[-1:] != (3,):
        raise ValueError(f"centre must be (3,) or (N, 3) (z, y, x), got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"centre must be finite, got {c}")
    s = np.asarray(_size3(size), dtype=np.int64)
    return np.floor(c + 0.5).astype(np.int64) - s // 2


def _extract(array: np.ndarray, start: np.ndarray, size, pad_value, out: np.ndarray) -> None:
    src, dst = [], []
    for a in range(3):
        lo, hi = int(start[a]), int(start[a]) + size[a]
        clo, chi = max(lo, 0), min(hi, array.shape[a])
        if chi <= clo:
            out[...] = pad_value
            return
        src.append(slice(clo, chi))
        dst.append(slice(clo - lo, chi - lo))
    full = all(d.start == 0 and d.stop == s for d, s in zip(dst, size, strict=True))
    if not full:
        out[...] = pad_value
    out[tuple(dst)] = array[tuple(src)]


def extract_patch(array, center_zyx, size, pad_value) -> np.ndarray:
    """Cut a ``size`` patch (int or ``(z, y, x)``) centred on voxel ``center_zyx`` (continuous;
    see the module docstring for rounding) out of ``array (z, y, x, ...)``; trailing (channel)
    axes are kept. Parts outside the volume are ``pad_value``. Returns a new array of
    ``array``'s dtype, shape ``(*size, ...)``."""
    a = array if isinstance(array, _LAZY) else np.asarray(array)
    if a.ndim < 3:
        raise ValueError(f"extract_patch expects a (z, y, x, ...) array, got shape {a.shape}")
    s = _size3(size)
    start = patch_start(center_zyx, s)
    if start.shape != (3,):
        raise ValueError("extract_patch takes one centre; use extract_patches for many")
    out = np.empty(s + a.shape[3:], dtype=a.dtype)
    _extract(a, start, s, pad_value, out)
    return out


def extract_patches(array, centers_zyx, size, pad_value) -> np.ndarray:
    """Batch of :func:`extract_patch`: ``centers_zyx (N, 3)`` -> ``(N, *size, ...)``."""
    a = array if isinstance(array, _LAZY) else np.asarray(array)
    s = _size3(size)
    c = np.asarray(centers_zyx, dtype=np.float64).reshape(-1, 3)
    starts = patch_start(c, s)
    out = np.empty((len(c),) + s + a.shape[3:], dtype=a.dtype)
    for i in range(len(c)):
        _extract(a, starts[i], s, pad_value, out[i])
    return out


def extract_patch_world(volume: CTVolume, center_xyz, size, pad_value) -> np.ndarray:
    """Patch of ``volume.array`` centred on world point ``center_xyz`` (LPS mm, ``(x, y, z)``),
    via ``volume.world_to_voxel``; the patch is in array order ``(z, y, x)``, with the
    volume's own spacing (resample first for a fixed mm size)."""
    return extract_patch(
        volume.array, volume.world_to_voxel(np.asarray(center_xyz)), size, pad_value
    )


def extract_patches_world(volume: CTVolume, centers_xyz, size, pad_value) -> np.ndarray:
    """Batch of :func:`extract_patch_world`: ``(N, 3)`` world centres -> ``(N, *size)``."""
    c = np.asarray(centers_xyz, dtype=np.float64).reshape(-1, 3)
    return extract_patches(volume.array, volume.world_to_voxel(c), size, pad_value)


# ----------------------------------------------------------------------------------------
# Augmentation: the 48 symmetries of the cube (axis permutations x flips), i.e. every
# combination of 90-degree rotations and mirror flips.
# ----------------------------------------------------------------------------------------

_PERMS = list(itertools.permutations(range(3)))
_FLIPS = list(itertools.product((False, True), repeat=3))
NUM_SYMMETRIES = len(_PERMS) * len(_FLIPS)  # 48


def symmetry(patch: np.ndarray, index: int) -> np.ndarray:
    """Apply cube symmetry ``index`` in ``[0, 48)`` to the 3 spatial axes of ``patch (z, y, x,
    ...)``: axis permutation ``index // 8`` then flips ``index % 8`` (bit per axis). Index 0 is
    the identity. Permutations that would change a non-cubic patch's shape are not allowed."""
    p = np.asarray(patch)
    if not 0 <= int(index) < NUM_SYMMETRIES:
        raise ValueError(f"symmetry index must be in [0, {NUM_SYMMETRIES}), got {index}")
    perm, flips = _PERMS[int(index) // 8], _FLIPS[int(index) % 8]
    if tuple(p.shape[i] for i in perm) != p.shape[:3]:
        raise ValueError(f"permutation {perm} changes the non-cubic patch shape {p.shape[:3]}")
    out = np.transpose(p, perm + tuple(range(3, p.ndim)))
    axes = tuple(a for a in range(3) if flips[a])
    return np.ascontiguousarray(np.flip(out, axes) if axes else out)


def _allowed(shape3) -> np.ndarray:
    return np.array(
        [
            i
            for i in range(NUM_SYMMETRIES)
            if tuple(shape3[j] for j in _PERMS[i // 8]) == tuple(shape3)
        ]
    )


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def random_flip_rot(patch, rng, *others):
    """Random flip / 90-degree rotation (one of the 48 cube symmetries, uniform; only the
    shape-preserving ones for a non-cubic patch). ``rng`` is a ``np.random.Generator`` or a
    seed. ``others`` (e.g. a segmentation mask of the same spatial shape) get the same
    transform. Returns the patch, or a tuple ``(patch, *others)`` when others are given."""
    g = _rng(rng)
    p = np.asarray(patch)
    k = int(g.choice(_allowed(p.shape[:3])))
    out = symmetry(p, k)
    if not others:
        return out
    return (out, *(symmetry(o, k) for o in others))


def random_flip_rot_batch(patches, rng) -> np.ndarray:
    """Independent :func:`random_flip_rot` of each patch of ``patches (B, z, y, x, ...)``."""
    g = _rng(rng)
    p = np.asarray(patches)
    allowed = _allowed(p.shape[1:4])
    ks = g.choice(allowed, size=p.shape[0])
    out = np.empty_like(p)
    for i, k in enumerate(ks):
        out[i] = symmetry(p[i], int(k))
    return out
