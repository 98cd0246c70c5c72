"""Arrays on disk read by row: the FPR patch sets and the augmentation pool's patches.

A record file is a plain uncompressed ``.npy`` file, or an uncompressed (stored) member of an
``.npz`` written by ``np.savez``, holding a C-order ``(N, ...)`` array: row ``i`` is the
``i``-th block of ``prod(shape[1:]) * itemsize`` bytes after the ``.npy`` header. The readers
copy the rows asked for straight into a new array with positional reads of a file opened for
that read only: nothing of the file stays mapped, so the process's memory (its peak RSS) is
the rows read, whatever N is. What the OS keeps in its page cache is not the process's and is
given back under memory pressure.

* :class:`RecordArray`: one file (or ``.npz`` member), a lazy ``(N, ...)`` array.
* :class:`ConcatRecords`: several lazy arrays end to end (a pool kind's shards).
* :class:`Subset`: chosen rows of a lazy array or of an in-memory one.
* :class:`AsType`: a lazy array's rows cast to another dtype as they are read.
* :func:`write_records`: write rows as they come, finalised atomically
  (:func:`nodulejax.runtime.files.atomic_write`).

The lazy arrays index like numpy arrays along the first axis (an int gives one row, a slice, an
int array or a boolean mask give the rows in the requested order, repeats allowed) and always
return a new ``ndarray``; ``np.asarray(a)`` reads every row (small sets, old callers). Rows are
read in file order, one read per run of consecutive rows, then put in the requested order.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterable

import numpy as np

from nodulejax.errors import RecordsError
from nodulejax.runtime.files import atomic_write

__all__ = ["LazyRows", "RecordArray", "ConcatRecords", "Subset", "AsType", "write_records"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_LOCAL_HEADER = b"PK\x03\x04"


class LazyRows:
    """A ``(N, ...)`` array whose rows are read on demand.

    Subclasses set ``shape`` (tuple), ``dtype`` (``np.dtype``) and ``name`` (for messages) and
    implement :meth:`_read_into`."""

    shape: tuple
    dtype: np.dtype
    name: str

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Fill ``out`` (len(rows), ...) C-contiguous with ``rows``: int64, sorted, unique and
        in range."""
        raise NotImplementedError

    # ------------------------------------------------------------------ numpy-like surface
    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        a = self.take(np.arange(len(self)))
        return a if dtype is None else a.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the rest of the key on the rows read
            if not key:
                return np.asarray(self)
            rows = self[key[0]]
            one = isinstance(key[0], (int, np.integer))
            return rows[key[1:]] if one else rows[(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"{self.name}: row {i} out of range for {len(self)} rows")
            i %= max(len(self), 1)
            out = np.empty((1,) + self.shape[1:], self.dtype)
            self._read_into(np.array([i], np.int64), out)
            return out[0]
        if isinstance(key, slice):
            return self.take(np.arange(*key.indices(len(self))))
        if key is Ellipsis:
            return np.asarray(self)
        return self.take(key)

    def take(self, indices) -> np.ndarray:
        """Rows ``indices`` (int array of any shape, negative counted from the end, repeats
        allowed; or a boolean mask of length N) -> ``indices.shape + shape[1:]`` new array."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"{self.name}: boolean mask of shape {idx.shape} for "
                                 f"{len(self)} rows")
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"{self.name}: row indices must be integers or a boolean mask, "
                             f"got dtype {idx.dtype}")
        flat = idx.astype(np.int64).ravel()
        n = len(self)
        bad = (flat < -n) | (flat >= n)
        if bad.any():
            raise IndexError(f"{self.name}: row {int(flat[bad][0])} out of range for {n} rows")
        flat = np.where(flat < 0, flat + n, flat)
        rows, inverse = np.unique(flat, return_inverse=True)
        tail = self.shape[1:]
        if len(rows) == len(flat) and np.array_equal(rows, flat):  # sorted, unique: in place
            out = np.empty((len(rows),) + tail, self.dtype)
            self._read_into(rows, out)
            return out.reshape(idx.shape + tail)
        buf = np.empty((len(rows),) + tail, self.dtype)
        self._read_into(rows, buf)
        return buf[inverse.reshape(-1)].reshape(idx.shape + tail)


# --------------------------------------------------------------------------- one file
def _read_npy_header(f, name: str) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` header at ``f``'s position; ``f`` is
    left at the first data byte."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
        raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, SyntaxError, EOFError) as e:
        raise RecordsError(f"{name}: not a readable .npy header ({e})") from e


class RecordArray(LazyRows):
    """The ``(N, ...)`` array of a ``.npy`` file, or of the stored member ``member`` (without
    ``.npy``) of an ``.npz``, read by row.

    Args:
      path: the ``.npy`` or ``.npz`` file.
      member: the ``.npz`` member (``"x"`` for ``x.npy``); None for a ``.npy`` file.
      row_shape: read each row with this shape instead (same number of elements, e.g. a
        ``(P, P, P, 1)`` row as ``(P, P, P)``).

    Raises RecordsError naming the file when it is missing, not an uncompressed C-order
    ``.npy`` of a plain dtype, shorter than its header says, or lacks ``member``."""

    def __init__(self, path: str | os.PathLike, member: str | None = None, *,
                 row_shape: tuple | None = None):
        self.path = os.fspath(path)
        self.name = self.path if member is None else f"{self.path}:{member}"
        try:
            with open(self.path, "rb") as f:
                start, end = (0, None) if member is None else self._member_span(f, member)
                f.seek(start)
                shape, fortran, dtype = _read_npy_header(f, self.name)
                self.offset = f.tell()
                size = os.fstat(f.fileno()).st_size if end is None else end
        except FileNotFoundError as e:
            raise RecordsError(f"{self.name}: missing record file") from e
        except OSError as e:
            raise RecordsError(f"{self.name}: unreadable record file ({e})") from e
        if not shape:
            raise RecordsError(f"{self.name}: a 0-d array has no rows")
        if dtype.hasobject:
            raise RecordsError(f"{self.name}: dtype {dtype} holds Python objects, not records")
        if fortran and len(shape) > 1:
            raise RecordsError(f"{self.name}: Fortran-order array, rows are not contiguous")
        tail = tuple(int(v) for v in shape[1:])
        if row_shape is not None:
            row_shape = tuple(int(v) for v in row_shape)
            if int(np.prod(row_shape)) != int(np.prod(tail)):
                raise RecordsError(f"{self.name}: rows of shape {tail} cannot be read as "
                                   f"{row_shape}")
            tail = row_shape
        self.shape = (int(shape[0]),) + tail
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(tail, dtype=np.int64)) * self.dtype.itemsize
        need = self.offset + self.shape[0] * self.row_bytes
        if size < need:
            raise RecordsError(f"{self.name}: truncated: the header says {self.shape[0]} rows "
                               f"of {self.row_bytes} bytes (data ends at byte {need}), the "
                               f"file holds {size} bytes")

    def _member_span(self, f, member: str) -> tuple[int, int]:
        """(first byte, end byte) in the ``.npz`` file ``f`` of ``member``'s ``.npy``: the
        zip local header's offset plus its length (name and extra fields)."""
        try:
            with zipfile.ZipFile(f) as z:
                info = z.getinfo(member + ".npy")
        except KeyError as e:
            raise RecordsError(f"{self.name}: no member {member + '.npy'!r} in the archive"
                               ) from e
        except zipfile.BadZipFile as e:
            raise RecordsError(f"{self.path}: not a readable .npz archive ({e})") from e
        if info.compress_type != zipfile.ZIP_STORED:
            raise RecordsError(f"{self.name}: compressed member (np.savez_compressed); only "
                               "stored members (np.savez) can be read by row")
        f.seek(info.header_offset)
        head = f.read(30)
        if len(head) != 30 or head[:4] != _ZIP_LOCAL_HEADER:
            raise RecordsError(f"{self.name}: bad zip local header at byte "
                               f"{info.header_offset}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        return start, start + info.file_size

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        if len(rows) == 0 or self.row_bytes == 0:
            return
        buf = memoryview(out.reshape(-1).view(np.uint8))
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [len(rows)]])
        rb = self.row_bytes
        try:
            with open(self.path, "rb", buffering=0) as f:
                for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                    f.seek(self.offset + int(rows[a]) * rb)
                    part, done = buf[a * rb:b * rb], 0
                    while done < len(part):
                        n = f.readinto(part[done:])
                        if not n:
                            raise RecordsError(f"{self.name}: truncated: rows {int(rows[a])}.."
                                               f"{int(rows[b - 1])} end past the file's end")
                        done += n
        except FileNotFoundError as e:
            raise RecordsError(f"{self.name}: missing record file") from e
        except OSError as e:
            raise RecordsError(f"{self.name}: unreadable record file ({e})") from e


# --------------------------------------------------------------------------- several files
class ConcatRecords(LazyRows):
    """Lazy arrays ``parts`` (same row shape and dtype) end to end: global row ``i`` is row
    ``i - starts[k]`` of part ``k``, ``starts`` the cumulative lengths."""

    def __init__(self, parts: list[LazyRows], name: str | None = None):
        if not parts:
            raise RecordsError(f"{name or 'ConcatRecords'}: no parts to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.shape[1:] != first.shape[1:] or p.dtype != first.dtype:
                raise RecordsError(f"{p.name}: rows {p.shape[1:]} {p.dtype} differ from "
                                   f"{first.name}'s {first.shape[1:]} {first.dtype}")
        self.parts = list(parts)
        lengths = np.array([len(p) for p in parts], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.shape = (int(self.starts[-1]),) + first.shape[1:]
        self.dtype = first.dtype
        self.name = name or f"{first.name} (+{len(parts) - 1} more)"

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        part = np.searchsorted(self.starts, rows, side="right") - 1
        bounds = np.searchsorted(part, np.arange(len(self.parts) + 1))  # rows sorted
        for k, p in enumerate(self.parts):
            a, b = int(bounds[k]), int(bounds[k + 1])
            if b > a:
                p._read_into(rows[a:b] - self.starts[k], out[a:b])


class Subset(LazyRows):
    """Rows ``indices`` (int, any order, repeats allowed) of ``base``: a lazy array or an
    in-memory ``ndarray``. Row ``i`` of the subset is row ``indices[i]`` of ``base``."""

    def __init__(self, base, indices):
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        self.base = base
        self.indices = idx.astype(np.int64).reshape(-1)
        n = len(base)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"{getattr(base, 'name', 'array')}: subset index out of range for "
                             f"{n} rows")
        self.shape = (len(self.indices),) + tuple(base.shape[1:])
        self.dtype = np.dtype(base.dtype)
        self.name = f"{getattr(base, 'name', 'array')}[subset of {len(self.indices)}]"

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        src = self.indices[rows]
        if isinstance(self.base, LazyRows):
            if len(src) < 2 or np.all(np.diff(src) > 0):
                self.base._read_into(src, out)
            else:
                out[...] = self.base.take(src)
        else:
            out[...] = np.asarray(self.base)[src]


class AsType(LazyRows):
    """The rows of ``base`` (a lazy array) cast to ``dtype`` as they are read (e.g. float16
    patches on disk read as the float32 the in-memory path gives)."""

    def __init__(self, base: LazyRows, dtype):
        self.base, self.dtype = base, np.dtype(dtype)
        self.shape = tuple(base.shape)
        self.name = f"{base.name} as {self.dtype}"

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        buf = np.empty((len(rows),) + self.shape[1:], self.base.dtype)
        self.base._read_into(rows, buf)
        out[...] = buf


# --------------------------------------------------------------------------- writing
def _npy_header(shape: tuple, dtype: np.dtype, length: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header for a C-order ``shape`` ``dtype`` array, padded with
    spaces to ``length`` bytes (default: the next multiple of 64)."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": tuple(int(v) for v in shape)}
    text = repr(d).encode("latin1")
    bare = len(_NPY_MAGIC) + 2 + 2 + len(text) + 1
    length = length or -(-bare // 64) * 64
    if bare > length:
        raise RecordsError(f"a .npy header for shape {shape} needs {bare} bytes > {length}")
    text += b" " * (length - bare) + b"\n"
    return _NPY_MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text


def write_records(path: str | os.PathLike, rows: Iterable, row_shape: tuple, dtype, *,
                  count: int | None = None) -> int:
    """Write the ``.npy`` file ``path`` of the rows of ``rows``, as they come; returns N.

    Args:
      rows: each item one row (``row_shape``) or a block of rows (``(k,) + row_shape``),
        cast to ``dtype``; never held together in memory.
      row_shape: the shape of one row, e.g. ``(P, P, P)``.
      count: the number of rows expected, checked at the end (None: any).

    The header reserves room for any row count and is rewritten with N at the end; the file
    goes through :func:`~nodulejax.runtime.files.atomic_write` (a hidden temp file, fsynced,
    renamed), so an exception or a killed writer never leaves a torn or partial ``path``.
    """
    row_shape = tuple(int(v) for v in row_shape)
    dtype = np.dtype(dtype)
    reserved = _npy_header((10 ** 18,) + row_shape, dtype)
    written = 0

    def write(f):
        nonlocal written
        f.write(reserved)
        for r in rows:
            a = np.ascontiguousarray(r, dtype=dtype)
            if a.shape == row_shape:
                a = a[None]
            if a.shape[1:] != row_shape:
                raise RecordsError(f"{path}: row of shape {a.shape} is neither {row_shape} "
                                   f"nor (k,) + {row_shape}")
            f.write(a.reshape(-1).view(np.uint8))
            written += len(a)
        if count is not None and written != count:
            raise RecordsError(f"{path}: {written} rows written, {count} expected")
        f.seek(0)
        f.write(_npy_header((written,) + row_shape, dtype, len(reserved)))
        f.seek(0, os.SEEK_END)

    atomic_write(path, write)
    return written
