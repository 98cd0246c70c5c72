"""Atomic file writes: a killed writer leaves the old file or the new one, never a torn one.

Every result file of the project (stage markers, pool shards and manifest, prepared-scan and
candidate caches, FROC results, LUNA16 submissions, metric logs) is written through
:func:`atomic_write`: a hidden temp file in the target's folder, flushed and fsynced, renamed
over the target (``os.replace``, atomic on POSIX), then the folder fsynced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_savez"]


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *,
                 text: bool = False) -> None:
    """Write ``path`` through ``write(f)`` on a temp file, then rename it into place.

    Args:
      path: target file; its folder is created if missing.
      write: called once with the open temp file (binary, or text UTF-8 with ``text=True``).
      text: open the temp file in text mode (``newline=""`` keeps the writer's line ends).
    """
    path = os.fspath(path)
    d, base = os.path.split(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{base}.tmp{os.getpid()}")
    try:
        with (open(tmp, "w", encoding="utf-8", newline="") if text else open(tmp, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(d)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``path`` <- ``text`` (UTF-8), atomically."""
    atomic_write(path, lambda f: f.write(text), text=True)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kw) -> None:
    """``path`` <- ``json.dump(obj, **dump_kw)``, atomically."""
    atomic_write(path, lambda f: json.dump(obj, f, **dump_kw), text=True)


def atomic_savez(path: str | os.PathLike, *, compressed: bool = False, **arrays) -> None:
    """``np.savez[_compressed](path, **arrays)``, atomically (``path`` keeps its name)."""
    save = np.savez_compressed if compressed else np.savez
    atomic_write(path, lambda f: save(f, **arrays))
