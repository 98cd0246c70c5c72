"""Patch sets on disk: cut once into the run folder, read back by row.

At the paper's scale the study's patch sets (the FPR candidates of ``candidates_V2.csv``, the
segmentation patches, the lung backgrounds and real positives of the augmentation pool and
of in-loop synthesis) are hundreds of GB at 64^3; no host holds them. A set is a folder
``ROOT/<prefix>_<digest>/`` (``ROOT`` = ``WORKDIR/patches``, :func:`patch_sets_dir`)::

    <name>.npy          one file per array; the large ones (the patches, their masks) are
                        read by row (:class:`~nodulejax.data.records.RecordArray`), the
                        small ones (labels, centres, uids) are loaded whole
    manifest.json       the set's fingerprint, its row count and which arrays are large

``digest`` is the first 16 hex digits of the SHA-256 of the fingerprint (what the set is a
function of: settings, scans, the sites' coordinates), so another config writes another
folder and a later call with the same inputs reads this one. The folder is written under a
hidden temp name and renamed into place: a killed writer leaves no set (its temp folder is
removed by the next writer on the same host). The scans' voxels are not hashed: the sets go
with the run's prepared scans (the ``prepare`` stage's redo removes both).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable

import numpy as np

from nodulejax.data.records import RecordArray, write_records
from nodulejax.errors import WorkdirError
from nodulejax.runtime.files import atomic_write, atomic_write_json

__all__ = ["MANIFEST", "patch_sets_dir", "digest", "scans_fingerprint", "set_folder",
           "write_set", "read_set", "cached_set"]

MANIFEST = "manifest.json"


def patch_sets_dir(workdir: str) -> str:
    """The folder of a run's patch sets on disk: ``WORKDIR/patches`` (removed with the
    prepared scans when the ``prepare`` stage is redone)."""
    return os.path.join(os.path.abspath(workdir), "patches")


def digest(*arrays) -> str:
    """SHA-256 (hex) of arrays' dtypes, shapes and bytes: a fingerprint of sites or centres."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def set_folder(root: str, prefix: str, fingerprint: dict) -> str:
    """``root/<prefix>_<first 16 hex digits of the fingerprint's SHA-256>``."""
    d = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    return os.path.join(root, f"{prefix}_{d[:16]}")


def scans_fingerprint(scans) -> dict:
    """The scans a patch set is cut from, for its fingerprint: uids and spacings (the voxels
    are not hashed; module docstring)."""
    return {"uids": [str(s.uid) for s in scans], "spacing": [float(s.spacing) for s in scans]}


#: A large array of a set: ``(row_shape, dtype, rows)``, ``rows`` an iterable of rows (or of
#: blocks of rows) written as they come.
Large = tuple[tuple, object, Iterable]


def write_set(folder: str, fingerprint: dict, small: dict, large: dict[str, Large]) -> None:
    """Write a patch set (module docstring) into a hidden temp folder beside ``folder`` and
    rename it to ``folder``. Every array has the same number of rows; ``small`` arrays are
    written whole, ``large`` ones row by row. Of writers racing (several hosts), the first
    rename wins and the others' copies are dropped. An OSError is a WorkdirError naming the
    folder."""
    root = os.path.dirname(folder)
    n = len(next(iter(small.values())))
    tmp = os.path.join(root, f".{os.path.basename(folder)}.tmp-{socket.gethostname()}-"
                             f"{os.getpid()}")
    try:
        os.makedirs(root, exist_ok=True)
        _remove_stale_temps(root)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for name, (row_shape, dtype, rows) in large.items():
            write_records(os.path.join(tmp, f"{name}.npy"), rows, row_shape, dtype, count=n)
        for k, v in small.items():
            atomic_write(os.path.join(tmp, f"{k}.npy"), lambda f, v=v: np.save(f, v))
        atomic_write_json(os.path.join(tmp, MANIFEST),
                          {"fingerprint": fingerprint, "count": n,
                           "arrays": sorted(large) + sorted(small), "large": sorted(large)},
                          indent=1, sort_keys=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.isdir(folder):  # not a lost race: a real failure
                raise
    except OSError as e:
        raise WorkdirError(f"{folder}: cannot write the patch set ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temps(root: str) -> None:
    """Remove the temp folders (``.<set>.tmp-<host>-<pid>``) in ``root`` of writers on this
    host that are no longer running (killed); other hosts' are left alone."""
    host = socket.gethostname()
    for name in os.listdir(root):
        owner, _, pid = name.partition(".tmp-")[2].rpartition("-")
        if not name.startswith(".") or owner != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except OSError:  # alive (another user's process): not ours to remove
            pass


def read_set(folder: str, fingerprint: dict | None = None) -> dict:
    """The patch set in ``folder``: its large arrays lazy
    (:class:`~nodulejax.data.records.RecordArray`, ``(N, ...)``), the others in memory. With
    ``fingerprint``, the manifest's must equal it. A missing, malformed or inconsistent set is
    a WorkdirError naming the folder."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
        n = int(manifest["count"])
        large = set(manifest.get("large", ["x"]))
        out = {k: RecordArray(os.path.join(folder, f"{k}.npy")) if k in large else
               np.load(os.path.join(folder, f"{k}.npy"), allow_pickle=False)
               for k in manifest["arrays"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WorkdirError(f"{folder}: unreadable patch set ({type(e).__name__}: {e}); "
                           "remove the folder to cut the patches again") from e
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        raise WorkdirError(f"{path}: the patch set here was cut with other settings or scans "
                           "than asked for; remove the folder to cut it again")
    sizes = {k: len(v) for k, v in out.items()}
    if any(v != n for v in sizes.values()):
        raise WorkdirError(f"{folder}: the manifest says {n} patches, the arrays hold {sizes}")
    return out


def cached_set(root: str, prefix: str, fingerprint: dict, small: dict,
               large: Callable[[], dict[str, Large]]) -> dict:
    """The set of ``fingerprint`` under ``root``: written first (``large()`` gives the
    large arrays' row iterables) unless a earlier call wrote it, then :func:`read_set`."""
    folder = set_folder(root, prefix, fingerprint)
    if not os.path.isdir(folder):
        write_set(folder, fingerprint, small, large())
    return read_set(folder, fingerprint)
