"""MetaImage (.mhd + .raw/.zraw, .mha) reader and writer, parsing the header ourselves.

The header is validated before any voxel is allocated: NDims 3, known ElementType, one channel,
DimSize within the voxel budget and consistent with the data size, ElementDataFile a plain file
name inside the header's folder (absolute paths, '..' and LIST are refused) or LOCAL (.mha).
Byte order follows BinaryDataByteOrderMSB / ElementByteOrderMSB. Compressed data
(CompressedData = True, .zraw) is zlib, decompressed with a bound so a corrupt or hostile
stream cannot allocate more than the declared volume.

Geometry: ``TransformMatrix`` lists the ITK direction matrix column by column (as ITK's
MetaImageIO reads it: values 3*j .. 3*j+2 are the world direction of index axis j), ``Offset``
is the origin, ``ElementSpacing`` and ``DimSize`` are in ITK (x, y, z) order. Intensities are
returned unchanged unless the header gives ``ElementToIntensityFunctionSlope/Offset``.
"""

from __future__ import annotations

import os
import re
import zlib

import numpy as np

from nodulejax.data.volume import (
    CTReadError,
    CTVolume,
    check_budget,
    check_finite_voxels,
    check_geometry,
    integral_int16,
)

#: MetaIO element types -> numpy little-endian dtypes (sizes as in MetaIO's metaTypes.h).
ELEMENT_TYPES = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG": "i4",
    "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}
_MAX_HEADER_BYTES = 1 << 16
_ALIASES = {
    "Position": "Offset",
    "Origin": "Offset",
    "Rotation": "TransformMatrix",
    "Orientation": "TransformMatrix",
    "ElementByteOrderMSB": "BinaryDataByteOrderMSB",
}


#: keys whose length is NDims: MetaIO reads them only after NDims
_NDIMS_FIRST = ("DimSize", "ElementSpacing", "ElementSize", "Offset", "TransformMatrix",
                "CenterOfRotation")


def _parse_header(path: str) -> tuple[dict[str, str], int]:
    """Return ({key: value}, byte offset just past the header) for a .mhd/.mha file."""
    try:
        with open(path, "rb") as f:
            head = f.read(_MAX_HEADER_BYTES)
    except OSError as e:
        raise CTReadError(f"{path}: cannot read MetaImage header: {e}") from e
    fields: dict[str, str] = {}
    pos = 0
    lineno = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            if len(head) == _MAX_HEADER_BYTES:
                break
            end = len(head)
        raw = head[pos:end]
        pos = end + 1
        lineno += 1
        line = raw.decode("latin-1").strip()
        if not line:
            continue
        # control bytes, tabs included: MetaIO (ITK) does not read a tab as a separator but
        # drops the field or the next line, so what such a header means is ambiguous
        if re.search(r"[\x00-\x1f\x7f]", raw.rstrip(b"\r").decode("latin-1")):
            raise CTReadError(f"{path}: header line {lineno} holds a tab or control byte: "
                              f"{line[:80]!r}")
        if "=" not in line:
            raise CTReadError(f"{path}: header line {lineno} is not 'Key = Value': {line[:80]!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        key = _ALIASES.get(key, key)
        if key in _NDIMS_FIRST and "NDims" not in fields:  # MetaIO (ITK) refuses these too
            raise CTReadError(f"{path}: header line {lineno}: {key} comes before NDims")
        if key in fields and fields[key] != value:
            raise CTReadError(f"{path}: header line {lineno}: {key} given twice, differently")
        fields[key] = value
        if key == "ElementDataFile":
            return fields, min(pos, len(head))
    raise CTReadError(f"{path}: MetaImage header has no ElementDataFile line")


def _bool(path, fields, key, default=False) -> bool:
    v = fields.get(key)
    if v is None:
        return default
    if v[:1] in ("T", "t", "1"):
        return True
    if v[:1] in ("F", "f", "0"):
        return False
    raise CTReadError(f"{path}: {key} = {v!r} is not True/False")


#: a MetaIO number as C's strtod reads it whole (Python's float() also takes '1_0', 'nan')
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _floats(path, fields, key, n, default):
    v = fields.get(key)
    if v is None:
        return np.asarray(default, dtype=np.float64)
    if not all(_NUMBER.fullmatch(t) for t in v.split()):
        raise CTReadError(f"{path}: {key} = {v!r} is not numeric")
    out = np.array([float(t) for t in v.split()], dtype=np.float64)
    if out.shape != (n,):
        raise CTReadError(f"{path}: {key} needs {n} numbers, got {v!r}")
    return out


def _data_file(path: str, value: str) -> str | None:
    """Resolve ElementDataFile to the real path of the file to read; None means LOCAL.

    The name is taken relative to the header's folder; its real path (every symlink
    resolved) must lie inside that folder, resolved too: either the folder the header is named
    in or, when the header itself is a link, the folder its real file is in (a folder of links
    to .mhd/.raw pairs elsewhere keeps working). The real path is returned so the file opened
    is the file checked.
    """
    if value.upper() == "LOCAL":
        return None
    if value.upper().startswith("LIST"):
        raise CTReadError(f"{path}: ElementDataFile = LIST (one file per slice) is not supported")
    if re.search(r"\s", value) or "%" in value:
        raise CTReadError(f"{path}: ElementDataFile = {value!r}: file patterns are not supported")
    parts = re.split(r"[\\/]", value)
    if os.path.isabs(value) or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise CTReadError(
            f"{path}: ElementDataFile = {value!r} is an absolute path; it must name a file in "
            "the header's folder"
        )
    if ".." in parts:
        raise CTReadError(
            f"{path}: ElementDataFile = {value!r} contains '..'; it must name a file in the "
            "header's folder"
        )
    folder = os.path.dirname(os.path.abspath(path))
    data = os.path.realpath(os.path.join(folder, *parts))
    roots = {os.path.realpath(folder), os.path.dirname(os.path.realpath(path))}
    if not any(os.path.commonpath([root, data]) == root for root in roots):
        raise CTReadError(
            f"{path}: ElementDataFile {value!r} resolves to {data}, outside the header's folder "
            f"{os.path.realpath(folder)} (a symlink pointing elsewhere?); refusing to read it"
        )
    if not os.path.isfile(data):
        raise CTReadError(f"{path}: ElementDataFile {value!r} does not exist ({data})")
    return data


def _decompress(path, data_path, buf: bytes, nbytes: int) -> bytes:
    d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
    try:
        out = d.decompress(buf, nbytes)
        extra = d.decompress(d.unconsumed_tail, 1) if len(out) == nbytes else b""
    except zlib.error as e:
        raise CTReadError(f"{path}: compressed data in {data_path} is corrupt: {e}") from e
    if len(out) < nbytes:
        raise CTReadError(
            f"{path}: compressed data in {data_path} is truncated or corrupt: it decompresses to "
            f"{len(out)} bytes, DimSize and ElementType need {nbytes}"
        )
    if extra or d.unconsumed_tail:
        raise CTReadError(
            f"{path}: compressed data in {data_path} decompresses to more than the {nbytes} "
            "bytes DimSize and ElementType imply"
        )
    if not d.eof:
        raise CTReadError(f"{path}: compressed data in {data_path} is truncated (no stream end)")
    return out


def _int_field(path, fields, key, default: int) -> int:
    v = fields.get(key, str(default)).strip()
    if not _INTEGER.fullmatch(v):
        raise CTReadError(f"{path}: {key} = {fields.get(key)!r} is not an integer")
    return int(v)


def _check_header_tail(path: str, header_end: int) -> None:
    """A detached header must end at its ElementDataFile line: MetaIO stops reading there, so
    a key after it (say ElementSpacing, moved by an editor) would be silently ignored."""
    try:
        with open(path, "rb") as f:
            f.seek(header_end)
            tail = f.read(_MAX_HEADER_BYTES + 1)
    except OSError as e:
        raise CTReadError(f"{path}: cannot read MetaImage header: {e}") from e
    if tail.strip():
        raise CTReadError(
            f"{path}: content after the ElementDataFile line ({tail.strip()[:40]!r}...); in a "
            "header with a separate data file ElementDataFile must be the last line"
        )


def _read_voxels(path, fields, data_path, offset, dtype, nvox, compressed) -> np.ndarray:
    """The (nvox,) raw voxels of `data_path` from byte `offset` (HeaderSize; -1: the data
    occupies the end of the file), zlib-decompressed with a bound when `compressed`."""
    nbytes = nvox * dtype.itemsize
    fsize = os.path.getsize(data_path)
    if offset == -1:  # MetaIO: data occupies the end of the file
        if compressed:
            raise CTReadError(f"{path}: HeaderSize = -1 with compressed data is not supported")
        offset = max(fsize - nbytes, 0)
    if offset < 0 or offset > fsize:
        raise CTReadError(f"{path}: HeaderSize = {offset} is outside {data_path}")
    avail = fsize - offset
    csize = None
    if "CompressedDataSize" in fields:  # checked even when unused: ITK refuses a bad one
        csize = _int_field(path, fields, "CompressedDataSize", 0)
        if csize <= 0:
            raise CTReadError(f"{path}: CompressedDataSize = {csize} must be positive")
    if not compressed:
        if avail != nbytes:
            what = "truncated" if avail < nbytes else "larger than declared"
            raise CTReadError(
                f"{path}: data in {data_path} is {what}: it holds {avail} bytes, DimSize "
                f"{fields.get('DimSize')} x {fields.get('ElementType')} ({dtype.itemsize} "
                f"bytes) needs {nbytes}"
            )
        return np.fromfile(data_path, dtype=dtype, count=nvox, offset=offset)
    if csize is not None:
        if csize > avail:
            raise CTReadError(
                f"{path}: {data_path} is truncated: CompressedDataSize = {csize} bytes, "
                f"file holds {avail}"
            )
        avail = csize
    with open(data_path, "rb") as f:
        f.seek(offset)
        buf = f.read(avail)
    return np.frombuffer(_decompress(path, data_path, buf, nbytes), dtype=dtype)


def read_metaimage(path: str, *, max_voxels: int = 1_000_000_000) -> CTVolume:
    """Read a .mhd/.mha file into a `CTVolume` (float32 HU, (z, y, x)); see module docstring."""
    fields, header_end = _parse_header(path)
    if fields.get("ObjectType", "Image") != "Image":
        raise CTReadError(f"{path}: ObjectType = {fields['ObjectType']!r}, expected Image")
    ndims = fields.get("NDims")
    if ndims is None or ndims.strip() != "3":
        raise CTReadError(f"{path}: NDims = {ndims!r}; only 3D volumes are supported")
    if not _bool(path, fields, "BinaryData", default=True):
        raise CTReadError(f"{path}: BinaryData = False (ASCII voxels) is not supported")
    ch = fields.get("ElementNumberOfChannels", "1").strip()
    if ch != "1":
        raise CTReadError(f"{path}: ElementNumberOfChannels = {ch}; CT must have 1 channel")
    etype = fields.get("ElementType", "").strip()
    if etype not in ELEMENT_TYPES:
        raise CTReadError(f"{path}: ElementType = {etype!r} is not one of {sorted(ELEMENT_TYPES)}")
    dims = fields.get("DimSize", "").split()
    if not all(_INTEGER.fullmatch(t) for t in dims):
        raise CTReadError(f"{path}: DimSize = {fields.get('DimSize')!r} is not integral")
    dims = [int(t) for t in dims]
    if len(dims) != 3 or min(dims) < 1:
        raise CTReadError(f"{path}: DimSize = {fields.get('DimSize')!r}; need 3 positive sizes")
    check_budget(path, dims[::-1], max_voxels)

    spacing_xyz = _floats(path, fields, "ElementSpacing", 3, [1.0, 1.0, 1.0])
    origin = _floats(path, fields, "Offset", 3, [0.0, 0.0, 0.0])
    tm = _floats(path, fields, "TransformMatrix", 9, np.eye(3).ravel())
    direction = tm.reshape(3, 3).T  # row j of the listing = column j of the direction
    check_geometry(path, spacing_xyz[::-1], origin, direction)

    msb = _bool(path, fields, "BinaryDataByteOrderMSB")
    dtype = np.dtype(ELEMENT_TYPES[etype]).newbyteorder(">" if msb else "<")
    nvox = dims[0] * dims[1] * dims[2]
    compressed = _bool(path, fields, "CompressedData")

    data_path = _data_file(path, fields["ElementDataFile"])
    if data_path is None:
        if _int_field(path, fields, "HeaderSize", 0) != 0:  # ITK and MetaIO disagree on it
            raise CTReadError(f"{path}: HeaderSize = {fields['HeaderSize']!r} with "
                              "ElementDataFile = LOCAL is ambiguous; refusing it")
        data_path, offset = path, header_end
    else:
        _check_header_tail(path, header_end)
        offset = _int_field(path, fields, "HeaderSize", 0)
    try:
        raw = _read_voxels(path, fields, data_path, offset, dtype, nvox, compressed)
    except OSError as e:
        raise CTReadError(f"{path}: cannot read voxel data from {data_path}: {e}") from e
    if raw.size != nvox:
        raise CTReadError(f"{path}: short read from {data_path}")

    arr = raw.reshape(dims[::-1]).astype(np.float32)
    slope = fields.get("ElementToIntensityFunctionSlope")
    inter = fields.get("ElementToIntensityFunctionOffset")
    if slope is not None or inter is not None:
        s = _floats(path, fields, "ElementToIntensityFunctionSlope", 1, [1.0])[0]
        b = _floats(path, fields, "ElementToIntensityFunctionOffset", 1, [0.0])[0]
        if not (np.isfinite(s) and np.isfinite(b) and s != 0):
            raise CTReadError(f"{path}: intensity slope/offset {s}, {b} are not usable")
        arr = (arr.astype(np.float64) * s + b).astype(np.float32)
    check_finite_voxels(path, arr)
    return CTVolume(arr, spacing_xyz[::-1].copy(), origin, direction, path=path)


def _fmt(values) -> str:
    return " ".join(repr(float(v)) for v in np.ravel(values))


def write_metaimage(volume: CTVolume, path: str, *, compress: bool = False) -> None:
    """Write `volume` as .mhd + .raw (.zraw if `compress`) or a single .mha (LOCAL data).

    int16 (MET_SHORT) when every HU is an integer within int16, float32 (MET_FLOAT) otherwise;
    little-endian. The direction is written column by column as TransformMatrix.
    """
    arr = volume.array
    if integral_int16(arr):
        data, etype = arr.astype("<i2"), "MET_SHORT"
    else:
        data, etype = arr.astype("<f4"), "MET_FLOAT"
    payload = np.ascontiguousarray(data).tobytes()
    if compress:
        payload = zlib.compress(payload, 6)
    local = path.lower().endswith(".mha")
    base = os.path.splitext(os.path.basename(path))[0]
    data_name = "LOCAL" if local else base + (".zraw" if compress else ".raw")
    z, y, x = volume.shape
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compress}",
    ]
    if compress:
        lines.append(f"CompressedDataSize = {len(payload)}")
    lines += [
        f"TransformMatrix = {_fmt(volume.direction.T)}",
        f"Offset = {_fmt(volume.origin)}",
        "CenterOfRotation = 0 0 0",
        f"ElementSpacing = {_fmt(volume.spacing[::-1])}",
        f"DimSize = {x} {y} {z}",
        f"ElementType = {etype}",
        f"ElementDataFile = {data_name}",
    ]
    header = ("\n".join(lines) + "\n").encode("ascii")
    if local:
        with open(path, "wb") as f:
            f.write(header)
            f.write(payload)
    else:
        with open(os.path.join(os.path.dirname(os.path.abspath(path)), data_name), "wb") as f:
            f.write(payload)
        with open(path, "wb") as f:
            f.write(header)
