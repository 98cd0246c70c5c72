"""The augmentation pool on disk: shard files, the manifest, atomic writes, and the reader.

Layout (written by :func:`nodulejax.adversarial.pool.build.build_pool`, read by
:class:`PoolReader` and ``nodulejax.train.augment``)::

    POOL/manifest.json                      config fingerprint, plan, finished shards
    POOL/<kind>/shard_00000.npz ...         x (n, P, P, P) float16 in [0, 1] + metadata (n, ...)

Shards are uncompressed ``np.savez`` archives, so the reader takes the patches row by row
from the stored ``x.npy`` member (``nodulejax.data.records``) and memory does not grow with
the pool (the paper's is ~470 GB).

Every file is written to a hidden temp file, fsynced, renamed over the target and its folder
fsynced, so a killed writer leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import json
import os

import numpy as np

from nodulejax.data.records import ConcatRecords, LazyRows, RecordArray
from nodulejax.errors import PoolError, RecordsError
from nodulejax.runtime.files import atomic_write

POOL_KINDS = ("syn_random", "syn_pgd", "perturb", "noise")
MANIFEST = "manifest.json"


def shard_path(pool_dir: str, kind: str, index: int) -> str:
    return os.path.join(pool_dir, kind, f"shard_{index:05d}.npz")


def write_shard(path: str, arrays: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_manifest(pool_dir: str) -> dict | None:
    path = os.path.join(pool_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise PoolError(f"{path}: unreadable pool manifest ({type(e).__name__}: {e})") from e


def write_manifest(pool_dir: str, manifest: dict) -> None:
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    atomic_write(os.path.join(pool_dir, MANIFEST), lambda f: f.write(data))


class PoolReader:
    """Read a pool: ``PoolReader(pool_dir).arrays(kind) -> (x (N, P, P, P) float16, meta)``.

    ``x`` is lazy (rows read from the shards on demand, :meth:`arrays`); ``meta`` maps each
    per-sample array's name to its concatenation over the shards (N, ...). With a manifest
    (pools written by :func:`build_pool`) only its finished shards are read, in shard order,
    and an unfinished pool raises PoolError; without one, every ``<kind>/*.npz`` in name
    order is read."""

    def __init__(self, pool_dir: str, *, require_complete: bool = True):
        if not pool_dir or not os.path.isdir(pool_dir):
            raise PoolError(f"augmentation pool folder {pool_dir!r} does not exist "
                            "(run `attack.py --mode pool` first)")
        self.pool_dir = pool_dir
        self.manifest = read_manifest(pool_dir)
        if self.manifest is not None and require_complete and not self.manifest.get("complete"):
            raise PoolError(f"{os.path.join(pool_dir, MANIFEST)}: the pool is unfinished "
                            "(re-run `attack.py --mode pool` to resume it)")
        self._cache: dict[str, tuple[LazyRows, dict]] = {}

    def _shards(self, kind: str) -> list[str]:
        if self.manifest is None:
            import glob

            return sorted(glob.glob(os.path.join(self.pool_dir, kind, "*.npz")))
        return [shard_path(self.pool_dir, kind, s)
                for s in sorted(self.manifest["done"].get(kind, []))]

    def kinds(self) -> list[str]:
        return [k for k in POOL_KINDS if self._shards(k)]

    def arrays(self, kind: str) -> tuple[LazyRows, dict]:
        """``(x, meta)`` of ``kind``: ``x`` the ``(N, P, P, P) float16`` patches of its shards
        end to end, read from disk by row (``nodulejax.data.records``: no shard is loaded
        whole, host memory does not grow with the pool); ``meta`` the per-sample arrays
        concatenated in memory (small: ``item``, ``key``, scores, ...)."""
        if kind not in POOL_KINDS:
            raise PoolError(f"pool kind {kind!r}: expected one of {POOL_KINDS}")
        if kind in self._cache:
            return self._cache[kind]
        paths = self._shards(kind)
        if not paths:
            raise PoolError(f"{os.path.join(self.pool_dir, kind)}: no shards for pool kind "
                            f"{kind!r} (present: {self.kinds()})")
        xs, metas = [], {}
        for path in paths:
            x = _shard_patches(path)
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise PoolError(f"{path}: patch shape {x.shape[1:]} differs from the "
                                f"earlier shards' {xs[0].shape[1:]}")
            xs.append(x)
            try:
                with np.load(path, allow_pickle=False) as z:
                    for k in z.files:
                        v = z[k] if k != "x" else None
                        if v is not None and v.ndim >= 1 and len(v) == len(x):
                            metas.setdefault(k, []).append(v)
            except Exception as e:  # noqa: BLE001 - a shard truncated or corrupt since
                raise PoolError(f"{path}: unreadable pool shard: {type(e).__name__}: {e}") from e
        x = xs[0] if len(xs) == 1 else ConcatRecords(xs, os.path.join(self.pool_dir, kind))
        meta = {k: np.concatenate(v) for k, v in metas.items() if len(v) == len(xs)}
        self._cache[kind] = (x, meta)
        return x, meta


def _shard_patches(path: str) -> RecordArray:
    """The patches ``x`` of a shard, ``(n, P, P, P) float16`` read by row from the stored
    ``x.npy`` member (``np.savez`` stores members uncompressed; a ``(n, P, P, P, 1)`` array
    is read without its channel axis)."""
    try:
        x = RecordArray(path, "x")
        if x.ndim == 5 and x.shape[-1] == 1:
            x = RecordArray(path, "x", row_shape=x.shape[1:4])
    except RecordsError as e:
        raise PoolError(f"unreadable pool shard: {e}") from e
    if x.ndim != 4 or x.dtype != np.float16:
        raise PoolError(f"{path}: 'x' must be (n, P, P, P) float16, got {x.shape} {x.dtype}")
    return x


__all__ = ["POOL_KINDS", "MANIFEST", "PoolReader", "read_manifest", "shard_path",
           "write_manifest", "write_shard"]
