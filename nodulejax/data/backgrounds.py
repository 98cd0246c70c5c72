"""Lung background and positive patches of prepared scans: one sampler for the whole study.

Section 4: "The locations of the background patches were constrained within the lungs using the
lung segmentation masks ... We also ensured that the background patches do not contain a real
nodule inside." :func:`background_patches` is the one sampler behind the augmentation pool,
the in-loop augmentation, the stress tests' negative patches and the figures; its draws per
scan depend only on ``(seed, salt, scan uid)``, never on the other scans or their order.
:func:`positive_patches` cuts the real nodule patches (Table 5, the perturb pool).
"""

from __future__ import annotations

import zlib

import numpy as np

from nodulejax.data import patchstore
from nodulejax.data.patches import extract_patch
from nodulejax.data.records import AsType
from nodulejax.errors import ConfigError
from nodulejax.runtime.keys import STREAMS

__all__ = ["sample_background_centers", "background_patches", "positive_patches"]


def sample_background_centers(
    lung_mask: np.ndarray,
    nodule_centers_zyx,
    n: int,
    min_dist_vox,
    rng: np.random.Generator,
    *,
    max_rounds: int = 50,
) -> np.ndarray:
    """n distinct voxel centres (n, 3) int64 (z, y, x) inside ``lung_mask`` whose distance to
    every nodule centre is >= ``min_dist_vox`` (scalar, or (K,) per nodule, e.g. radius plus
    half a patch). Rejection sampling from the mask voxels; deterministic given ``rng``.
    Raises NoduleJaxError (ConfigError) when fewer than n valid voxels exist."""
    mask = np.asarray(lung_mask, bool)
    if mask.ndim != 3:
        raise ConfigError(f"sample_background_centers: lung_mask must be 3-D, got {mask.shape}")
    centers = np.asarray(nodule_centers_zyx, np.float64).reshape(-1, 3)
    dmin = np.broadcast_to(np.asarray(min_dist_vox, np.float64), (len(centers),))
    flat = np.flatnonzero(mask)

    def valid(idx):
        if len(centers) == 0:
            return np.ones(len(idx), bool)
        zyx = np.stack(np.unravel_index(idx, mask.shape), 1).astype(np.float64)
        d = np.linalg.norm(zyx[:, None, :] - centers[None], axis=2)
        return np.all(d >= dmin[None], axis=1)

    chosen: list[int] = []
    seen: set[int] = set()
    for _ in range(max_rounds):
        if len(chosen) >= n or len(flat) == 0:
            break
        cand = flat[rng.integers(0, len(flat), size=max(4 * (n - len(chosen)), 16))]
        for c in cand[valid(cand)]:
            if c not in seen:
                seen.add(int(c))
                chosen.append(int(c))
                if len(chosen) == n:
                    break
    if len(chosen) < n:  # sparse valid set: enumerate it exactly (chunked)
        ch = 1 << 20
        parts = [flat[i : i + ch][valid(flat[i : i + ch])] for i in range(0, len(flat), ch)]
        ok = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        rest = np.setdiff1d(ok, np.asarray(chosen, np.int64))
        if len(chosen) + len(rest) < n:
            raise ConfigError(
                f"sample_background_centers: only {len(chosen) + len(rest)} lung voxels are >= "
                f"min_dist_vox from the {len(centers)} nodules, {n} requested"
            )
        chosen += rng.choice(rest, size=n - len(chosen), replace=False).tolist()
    return np.stack(np.unravel_index(np.asarray(chosen, np.int64), mask.shape), 1)


def _centres(scans, patch_size, per_scan, seed, salt):
    """Per scan, the background centres of :func:`background_patches` ``(k, 3) int64``."""
    out = []
    for s in scans:
        cz = np.concatenate([np.reshape(s.nodules_zyx, (-1, 3)),
                             np.reshape(s.excluded_zyx, (-1, 3))])
        d = np.concatenate([np.ravel(s.nodules_diam_mm), np.ravel(s.excluded_diam_mm)])
        r = np.maximum(d, 0) / 2 / s.spacing + patch_size / 2
        rng = np.random.default_rng([seed, salt, zlib.crc32(s.uid.encode())])
        try:
            c = sample_background_centers(s.lung, cz, per_scan, r, rng)
        except ConfigError:
            c = sample_background_centers(s.lung, cz, per_scan, r / 2, rng)
        out.append(np.asarray(c, np.int64).reshape(-1, 3))
    return out


def _patch_set(scans, centres, patch_size, root, fingerprint):
    """``(x, uid, center (N, 3) float64)`` of the patches at ``centres`` (voxel zyx, one
    ``(k, 3)`` array per scan): in memory (``x`` float32), or with ``root`` written once as
    float16 and read back by row as float32 (:mod:`nodulejax.data.patchstore`; the prepared
    image has float16 precision, so the values are the same)."""
    p = int(patch_size)
    uids = np.asarray([s.uid for s, c in zip(scans, centres, strict=True) for _ in c],
                      dtype=str)
    cen = (np.concatenate(centres) if centres else np.zeros((0, 3))).astype(np.float64)

    def rows(dtype):
        for s, cs in zip(scans, centres, strict=True):
            for c in cs:
                yield extract_patch(s.image, c, p, 0.0).astype(dtype)

    if root is None:
        xs = list(rows(np.float32))
        return np.stack(xs) if xs else np.zeros((0, p, p, p), np.float32), uids, cen
    fp = {**fingerprint, "format": 1, "patch_size": p, **patchstore.scans_fingerprint(scans),
          "centres_sha256": patchstore.digest(cen)}
    got = patchstore.cached_set(root, f"{fingerprint['kind']}_p{p}", fp,
                                {"uid": uids, "center": cen},
                                lambda: {"x": ((p, p, p), np.float16, rows(np.float16))})
    return AsType(got["x"], np.float32), got["uid"], got["center"]


def background_patches(scans, patch_size: int, per_scan: int, seed: int,
                       salt: int = STREAMS["backgrounds/pool"], root: str | None = None):
    """Lung background patches without a finding (Section 4): ``per_scan`` centres per scan in
    the lung mask, at least (finding radius + half a patch) voxels from every included and
    excluded finding (halved if the lung is too small). Scan ``s`` draws from
    ``default_rng([seed, salt, crc32(uid)])``, so it does not depend on the other scans.

    Returns ``x (N, P, P, P) float32``, ``uid (N,) str``, ``center (N, 3) int64`` (zyx).
    ``root`` (``WORKDIR/patches``): ``x`` is cut once to disk and read back by row (a lazy
    array of the same values; :func:`_patch_set`)."""
    centres = _centres(scans, patch_size, per_scan, seed, salt)
    x, uid, cen = _patch_set(scans, centres, patch_size, root,
                             {"kind": "bg", "per_scan": int(per_scan), "seed": int(seed),
                              "salt": int(salt)})
    return x, uid, cen.astype(np.int64).reshape(-1, 3)


def positive_patches(scans, patch_size: int, root: str | None = None):
    """Real nodule patches at the included nodules' centres (as ``fpr_patches`` positives):
    ``x (N, P, P, P) float32``, ``uid (N,)``, ``center (N, 3) int64`` (rounded zyx); ``root``
    as in :func:`background_patches`."""
    # the patch is cut at the continuous centre; ``center`` reports it rounded
    centres = [np.reshape(s.nodules_zyx, (-1, 3)) for s in scans]
    x, uid, cen = _patch_set(scans, centres, patch_size, root, {"kind": "pos"})
    return x, uid, np.round(cen).astype(np.int64).reshape(-1, 3)
