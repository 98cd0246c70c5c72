"""Property-based fuzzing of the readers: MetaImage, NIfTI and the LUNA16 CSVs.

Each test starts from a valid file and mutates ONE thing (a header key dropped, duplicated or
moved; a numeric field replaced by a negative, zero, huge, NaN, Inf or non-numeric value or
the wrong count of numbers; random bytes; truncation at a random offset; the data file swapped
for a link). The properties, checked for every generated input:

* the outcome is either a correct volume / table or the project's own error (CTReadError,
  LUNA16FormatError) naming the file; any other exception fails the test;
* no hang: every example runs under a hypothesis deadline;
* no allocation above the voxel budget: tracemalloc's peak while reading stays below a bound
  proportional to the budget (a huge DimSize must be refused from the header);
* no read outside the header's folder: an audit hook records every file opened while reading
  and each one's real path must lie inside the example's folder.

"Correct" is judged by an independent reader: SimpleITK for MetaImage, nibabel's own scaled
data and affine for NIfTI, and the unmutated table for the CSVs. Example counts are bounded
so the file runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import struct
import sys
import tempfile
import threading
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodulejax.data import luna16
from nodulejax.data.io import CTVolume, load_ct, save_ct
from nodulejax.errors import CTReadError, LUNA16FormatError

SHAPE = (3, 4, 5)  # (z, y, x)
NVOX = int(np.prod(SHAPE))
BUDGET = 4096  # max_voxels for every read: far above the valid file, far below a huge DimSize
#: tracemalloc peak allowed per read: 16 MiB. A valid read takes under 100 kB, but the first
#: read that imports a module lazily (a first warning, a nibabel submodule) traces a few MB;
#: the huge DimSize / dim headers below claim over 10^13 voxels, so a read that allocated what
#: the header claims would be far above this bound.
PEAK_BYTES = 16 << 20
#: NODULEJAX_FUZZ_EXAMPLES raises the per-test example count for a longer local hunt
FUZZ = settings(max_examples=int(os.environ.get("NODULEJAX_FUZZ_EXAMPLES", "40")),
                deadline=5000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

NUMERIC_BAD = ["-1", "-2.5", "0", "1e308", "1e999", "99999999999999999999", "nan", "NaN",
               "inf", "-inf", "Infinity", "abc", "1_0", "0x10", "", "1,5"]


# ------------------------------------------------------------------------ instrumentation

_OPENED: list[str] | None = None


_PYTHON = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)})


def _audit(event, args):
    if _OPENED is not None and event == "open" and args and isinstance(args[0], str | bytes):
        p = os.fsdecode(args[0])
        if not os.path.realpath(p).startswith(_PYTHON):  # lazy module imports are not reads
            _OPENED.append(p)


sys.addaudithook(_audit)  # hooks cannot be removed; it records only inside _watch()


@contextlib.contextmanager
def _watch():
    """Record the files opened and the peak traced allocation inside the block."""
    global _OPENED
    _OPENED = []
    tracemalloc.start()
    box = {"opened": _OPENED}
    try:
        yield box
    finally:
        box["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        _OPENED = None


def _read(path, reader=None, error=CTReadError):
    """Read `path`; return (result or None, the error's message or None). Asserts the
    no-escape, no-allocation and names-the-file properties; other exceptions propagate."""
    folder = os.path.realpath(os.path.dirname(path))
    result, msg = None, None
    with _watch() as w:
        try:
            result = (reader or (lambda p: load_ct(p, max_voxels=BUDGET)))(path)
        except error as e:
            msg = str(e)
    for p in w["opened"]:
        real = os.path.realpath(p)
        assert os.path.commonpath([folder, real]) == folder, f"read outside {folder}: {real}"
    assert w["peak"] < PEAK_BYTES, f"allocated {w['peak']} bytes reading {path}"
    if msg is not None:
        assert path in msg, msg
    return result, msg


@contextlib.contextmanager
def _example_dir(base):
    """A fresh folder per hypothesis example (inside `base`), plus a sibling 'outside'."""
    d = tempfile.mkdtemp(dir=base)
    inside = os.path.join(d, "scan")
    os.makedirs(inside)
    os.makedirs(os.path.join(d, "outside"))
    try:
        yield inside
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _volume():
    rng = np.random.default_rng(7)
    arr = rng.integers(-1000, 400, size=SHAPE).astype(np.float32)
    direction = np.diag([-1.0, -1.0, 1.0])
    return CTVolume(arr, np.array([2.5, 0.7, 0.6]), np.array([-170.25, -160.5, -310.125]),
                    direction)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz"))


# ------------------------------------------------------------------------ MetaImage

MHD_FORMATS = ("vol.mhd", "zvol.mhd", "vol.mha")
NII_FORMATS = ("vol.nii", "vol.nii.gz")


def _write_valid(folder, name):
    path = os.path.join(folder, name)
    save_ct(_volume(), path, compress=name.startswith("z"))
    return path


def _split_header(path):
    """(header lines, data bytes following the header in the same file)."""
    blob = open(path, "rb").read()
    end = blob.index(b"ElementDataFile")
    end = blob.index(b"\n", end) + 1
    return blob[:end].decode("ascii").splitlines(), blob[end:]


def _put_header(path, lines, local_data):
    with open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("latin-1") + local_data)


def _data_path(path):
    lines, _ = _split_header(path)
    name = [ln.split("=", 1)[1].strip() for ln in lines if ln.startswith("ElementDataFile")][0]
    return None if name == "LOCAL" else os.path.join(os.path.dirname(path), name)


def _check_against_itk(path, vol):
    """A volume we accepted must be what ITK reads from the same file."""
    img = sitk.ReadImage(path)
    ref = sitk.GetArrayFromImage(img).astype(np.float32)
    np.testing.assert_array_equal(vol.array, ref)
    np.testing.assert_allclose(vol.spacing, np.array(img.GetSpacing())[::-1], rtol=1e-6)
    np.testing.assert_allclose(vol.origin, img.GetOrigin(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(vol.direction, np.array(img.GetDirection()).reshape(3, 3),
                               atol=1e-6)


mhd_key_mutation = st.tuples(st.sampled_from(["drop", "duplicate", "duplicate_changed", "move"]),
                             st.integers(0, 30), st.integers(0, 30))


@FUZZ
@given(name=st.sampled_from(MHD_FORMATS), mutation=mhd_key_mutation)
def test_metaimage_header_keys_dropped_duplicated_reordered(base, name, mutation):
    kind, i, j = mutation
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        lines, local = _split_header(path)
        i, j = i % len(lines), j % len(lines)
        key = lines[i].split("=")[0].strip()
        if kind == "drop":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(j, lines[i])
        elif kind == "duplicate_changed":
            lines.insert(j, f"{key} = 7")
        else:
            lines.insert(j, lines.pop(i))
        _put_header(path, lines, local)
        vol, msg = _read(path)
        if vol is not None:
            _check_against_itk(path, vol)
        elif kind == "duplicate_changed" and key != "ElementDataFile" and j <= lines.index(
                next(ln for ln in lines if ln.startswith("ElementDataFile"))):
            assert "given twice" in msg or key in msg or "7" in msg, msg


MHD_NUMERIC = ("NDims", "DimSize", "ElementSpacing", "Offset", "TransformMatrix",
               "HeaderSize", "CompressedDataSize", "ElementNumberOfChannels",
               "ElementToIntensityFunctionSlope", "ElementToIntensityFunctionOffset")


def _wrong_count(value: str, extra: bool) -> str:
    parts = value.split()
    return " ".join(parts + ["1"]) if extra else " ".join(parts[:-1])


@FUZZ
@given(name=st.sampled_from(MHD_FORMATS), key=st.sampled_from(MHD_NUMERIC),
       bad=st.one_of(st.sampled_from(NUMERIC_BAD), st.sampled_from(["+count", "-count"]),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr)),
       which=st.integers(0, 8))
def test_metaimage_numeric_fields_out_of_range(base, name, key, bad, which):
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        lines, local = _split_header(path)
        idx = [k for k, ln in enumerate(lines) if ln.split("=")[0].strip() == key]
        old = lines[idx[0]].split("=", 1)[1].strip() if idx else "1 1 1"
        if bad in ("+count", "-count"):
            new = _wrong_count(old, bad == "+count")
        else:  # replace one of the numbers (all of them for a scalar field)
            parts = old.split()
            parts[which % len(parts)] = bad
            new = " ".join(parts)
        line = f"{key} = {new}"
        if idx:
            lines[idx[0]] = line
        else:
            lines.insert(len(lines) - 1, line)
        _put_header(path, lines, local)
        vol, msg = _read(path)
        if vol is not None:
            _check_against_itk(path, vol)
            assert np.all(vol.spacing > 0) and np.all(np.isfinite(vol.spacing))
            assert np.all(np.isfinite(vol.origin)) and np.all(np.isfinite(vol.array))


def _read_into(box: dict, path: str) -> None:
    box["r"] = _read(path)


@pytest.mark.parametrize("name", MHD_FORMATS + NII_FORMATS)
def test_a_pipe_in_place_of_a_file_is_refused_without_blocking(base, name):
    """A FIFO as the header, the .nii or the data file: opening one would block forever."""
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        data = _data_path(path) if name.endswith((".mhd", ".mha")) else None
        victims = [path] + ([data] if data else [])
        for victim in victims:
            if victim != path:
                _write_valid(d, name)
            os.remove(victim)
            os.mkfifo(victim)
            box: dict = {}
            t = threading.Thread(target=functools.partial(_read_into, box, path), daemon=True)
            t.start()
            t.join(timeout=20)
            assert not t.is_alive(), f"reading {path} blocked on the pipe {victim}"
            vol, msg = box["r"]
            assert vol is None and msg, msg
            os.remove(victim)


def test_metaimage_huge_dimsize_refused_before_allocating(base):
    with _example_dir(base) as d:
        for name in MHD_FORMATS:
            path = _write_valid(d, name)
            lines, local = _split_header(path)
            lines = [("DimSize = 100000 100000 100000" if ln.startswith("DimSize") else ln)
                     for ln in lines]
            _put_header(path, lines, local)
            vol, msg = _read(path)
            assert vol is None and "budget" in msg, msg
        # the budget is exact: one voxel fewer than the valid volume is refused
        path = _write_valid(d, "vol.mhd")
        with pytest.raises(CTReadError, match="budget"):
            load_ct(path, max_voxels=NVOX - 1)
        assert load_ct(path, max_voxels=NVOX).shape == SHAPE


@FUZZ
@given(name=st.sampled_from(MHD_FORMATS), target=st.sampled_from(["header", "data"]),
       where=st.floats(0, 1, exclude_max=True), payload=st.binary(min_size=1, max_size=8))
def test_metaimage_random_bytes(base, name, target, where, payload):
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        victim = path if target == "header" else (_data_path(path) or path)
        blob = bytearray(open(victim, "rb").read())
        at = int(where * len(blob))
        blob[at:at + len(payload)] = payload
        open(victim, "wb").write(bytes(blob))
        vol, _ = _read(path)
        if vol is not None:
            _check_against_itk(path, vol)


@FUZZ
@given(name=st.sampled_from(MHD_FORMATS), target=st.sampled_from(["header", "data"]),
       where=st.floats(0, 1, exclude_max=True))
def test_metaimage_truncated(base, name, target, where):
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        data = _data_path(path) or path
        victim = path if target == "header" else data
        blob = open(victim, "rb").read()
        cut = int(where * len(blob))
        os.truncate(victim, cut)
        vol, msg = _read(path)
        if vol is not None:  # only a detached header's final newline may go
            assert victim != data
            assert blob[cut:].strip() == b"", f"read a file truncated at {cut}"
            np.testing.assert_array_equal(vol.array, _volume().array)
        else:
            assert msg


LINK_CASES = ("inside_link", "outside_link", "outside_dir_link", "dangling", "dev_zero",
              "dotdot", "absolute", "self_link_header_folder_link")


@pytest.mark.parametrize("name", MHD_FORMATS[:2])
@pytest.mark.parametrize("case", LINK_CASES)
def test_metaimage_data_file_links(base, name, case):
    """The data file swapped for a link, or named outside the folder: only a link that
    resolves inside the header's folder is read; everything else is CTReadError."""
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        data = _data_path(path)
        outside = os.path.join(os.path.dirname(d), "outside")
        lines, local = _split_header(path)
        if case == "inside_link":
            shutil.move(data, data + ".real")
            os.symlink(os.path.basename(data) + ".real", data)
        elif case == "outside_link":  # same bytes, but outside: must still be refused
            shutil.move(data, os.path.join(outside, "copy.raw"))
            os.symlink(os.path.join(outside, "copy.raw"), data)
        elif case == "outside_dir_link":
            shutil.move(data, os.path.join(outside, os.path.basename(data)))
            os.symlink(outside, os.path.join(d, "sub"))
            lines[-1] = f"ElementDataFile = sub/{os.path.basename(data)}"
        elif case == "dangling":
            os.remove(data)
            os.symlink(os.path.join(d, "nowhere.raw"), data)
        elif case == "dev_zero":
            os.remove(data)
            os.symlink("/dev/zero", data)
        elif case == "dotdot":
            shutil.move(data, os.path.join(outside, "x.raw"))
            lines[-1] = "ElementDataFile = ../outside/x.raw"
        elif case == "absolute":
            shutil.move(data, os.path.join(outside, "x.raw"))
            lines[-1] = f"ElementDataFile = {os.path.join(outside, 'x.raw')}"
        else:  # header and data both links into one real folder (a folder of links)
            real_dir = os.path.join(outside, "real")
            os.makedirs(real_dir)
            for p in (path, data):
                shutil.move(p, os.path.join(real_dir, os.path.basename(p)))
                os.symlink(os.path.join(real_dir, os.path.basename(p)), p)
        if case in ("outside_dir_link", "dotdot", "absolute"):
            _put_header(path, lines, local)
        if case == "self_link_header_folder_link":
            vol = load_ct(path, max_voxels=BUDGET)  # opens files in the real folder: allowed
            np.testing.assert_array_equal(vol.array, _volume().array)
            return
        vol, msg = _read(path)
        if case == "inside_link":
            np.testing.assert_array_equal(vol.array, _volume().array)
        else:
            assert vol is None, f"{case}: read a file outside the header's folder"
            assert "ElementDataFile" in msg, msg


# ------------------------------------------------------------------------ NIfTI

#: (name, byte offset, struct format, count) of the NIfTI-1 header's numeric fields
NII_FIELDS = [("dim", 40, "<h", 8), ("datatype", 70, "<h", 1), ("bitpix", 72, "<h", 1),
              ("pixdim", 76, "<f", 8), ("vox_offset", 108, "<f", 1), ("scl_slope", 112, "<f", 1),
              ("scl_inter", 116, "<f", 1), ("qform_code", 252, "<h", 1),
              ("sform_code", 254, "<h", 1), ("quatern", 256, "<f", 6), ("srow", 280, "<f", 12)]
NII_INT_BAD = [-1, 0, 1, 2, 3, 4, 8, 32767, -32768]
NII_FLOAT_BAD = [-1.0, -0.5, 0.0, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf")]


def _nii_bytes(path):
    import gzip

    raw = open(path, "rb").read()
    return gzip.decompress(raw) if path.endswith(".gz") else raw


def _nii_put(path, blob):
    import gzip

    open(path, "wb").write(gzip.compress(blob, mtime=0) if path.endswith(".gz") else blob)


def _check_against_nibabel(path, vol):
    """A volume we accepted must be nibabel's scaled data and affine (RAS -> LPS)."""
    img = nib.load(path)
    ref = np.asarray(img.dataobj, dtype=np.float64).reshape(vol.shape[::-1])  # (i, j, k)
    np.testing.assert_allclose(vol.array, ref.astype(np.float32).transpose(2, 1, 0), rtol=1e-6)
    ijk = np.array([[0, 0, 0], [1, 2, 3], [4, 3, 2]], float)
    ras = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    lps = ras * np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(vol.voxel_to_world(ijk[:, ::-1]), lps, rtol=1e-5, atol=1e-4)


@FUZZ
@given(name=st.sampled_from(NII_FORMATS), field=st.sampled_from(NII_FIELDS),
       which=st.integers(0, 11), ival=st.sampled_from(NII_INT_BAD),
       fval=st.sampled_from(NII_FLOAT_BAD))
def test_nifti_numeric_fields_out_of_range(base, name, field, which, ival, fval):
    fname, off, fmt, count = field
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        blob = bytearray(_nii_bytes(path))
        k = which % count
        value = ival if fmt == "<h" else fval
        struct.pack_into(fmt, blob, off + k * struct.calcsize(fmt), value)
        _nii_put(path, bytes(blob))
        vol, _ = _read(path)
        if vol is not None:
            _check_against_nibabel(path, vol)
            assert np.all(vol.spacing > 0) and np.all(np.isfinite(vol.spacing))


def test_nifti_huge_dims_refused_before_allocating(base):
    with _example_dir(base) as d:
        for name in NII_FORMATS:
            path = _write_valid(d, name)
            blob = bytearray(_nii_bytes(path))
            struct.pack_into("<3h", blob, 42, 30000, 30000, 30000)
            _nii_put(path, bytes(blob))
            vol, msg = _read(path)
            assert vol is None and "budget" in msg, msg


@FUZZ
@given(name=st.sampled_from(NII_FORMATS), where=st.floats(0, 1, exclude_max=True),
       payload=st.binary(min_size=1, max_size=8), on_disk=st.booleans())
def test_nifti_random_bytes(base, name, where, payload, on_disk):
    """Random bytes in the (decompressed) file, or in the gzip stream itself."""
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        blob = bytearray(open(path, "rb").read() if on_disk else _nii_bytes(path))
        at = int(where * len(blob))
        blob[at:at + len(payload)] = payload
        if on_disk:
            open(path, "wb").write(bytes(blob))
        else:
            _nii_put(path, bytes(blob))
        vol, _ = _read(path)
        if vol is not None:
            _check_against_nibabel(path, vol)


@FUZZ
@given(name=st.sampled_from(NII_FORMATS), where=st.floats(0, 1, exclude_max=True))
def test_nifti_truncated(base, name, where):
    with _example_dir(base) as d:
        path = _write_valid(d, name)
        os.truncate(path, int(where * os.path.getsize(path)))
        vol, msg = _read(path)
        assert vol is None and msg


# ------------------------------------------------------------------------ LUNA16 CSVs

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "luna16")
if not os.path.isdir(REAL):
    REAL = "/work/shared/data/luna16"
UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"


def _head(name, n=12):
    """The first n rows of a real LUNA16 CSV (a synthetic one when they are not here)."""
    p = os.path.join(REAL, name)
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            return "".join(f.readline() for _ in range(n + 1))
    last = "-1" if "excluded" in name else "5.5"
    rows = [f"{UID},{-100 + i}.25,{-50 - i}.5,{-300 + 2 * i}.0,{last}" for i in range(n)]
    return "seriesuid,coordX,coordY,coordZ,diameter_mm\n" + "\n".join(rows) + "\n"


def _rows_of(text):
    return [r.split(",") for r in text.strip().split("\n")]


def _table_text(rows):
    return "\n".join(",".join(r) for r in rows) + "\n"


CSV_KINDS = {
    "annotations.csv": (luna16.read_annotations, "diameter_mm"),
    "annotations_excluded.csv": (luna16.read_annotations, "diameter_mm"),
    "candidates_V2.csv": (luna16.read_candidates, "class"),
    "predictions.csv": (luna16.read_predictions, "probability"),
}


def _base_csv(name):
    rows = _rows_of(_head("annotations.csv" if name != "annotations_excluded.csv" else name))
    last = CSV_KINDS[name][1]
    rows[0][4] = last
    for k, r in enumerate(rows[1:]):
        if last == "class":
            r[4] = str(k % 2)
        elif last == "probability":
            r[4] = repr(round(0.05 + 0.9 * k / len(rows), 6))
    return rows


def _as_tuple(table):
    last = [getattr(table, a) for a in ("diameter_mm", "label", "probability")
            if hasattr(table, a)][0]
    return table.seriesuid.tolist(), table.xyz.tolist(), np.asarray(last, float).tolist()


def _expect(rows):
    """The table the unmutated rows mean (an oracle independent of the reader)."""
    head = rows[0]
    c = {name: head.index(name) for name in head}
    body = [r for r in rows[1:] if any(v.strip() for v in r)]
    last = [n for n in head if n in ("diameter_mm", "class", "probability")][0]
    return ([r[c["seriesuid"]] for r in body],
            [[float(r[c[k]]) for k in ("coordX", "coordY", "coordZ")] for r in body],
            [float(r[c[last]]) for r in body])


def _csv_read(path, reader):
    return _read(path, reader=reader, error=LUNA16FormatError)


def _check_range(name, table):
    uids, xyz, last = _as_tuple(table)
    assert np.all(np.isfinite(xyz))
    last = np.asarray(last)
    if name == "annotations.csv":
        assert np.all(last > 0)
    elif name == "annotations_excluded.csv":
        assert np.all((last > 0) | (last == -1))
    elif name == "candidates_V2.csv":
        assert set(last.tolist()) <= {0.0, 1.0}
    else:
        assert np.all((last >= 0) & (last <= 1))


csv_mutation = st.sampled_from(["drop", "duplicate", "reorder"])


@FUZZ
@given(name=st.sampled_from(sorted(CSV_KINDS)), kind=csv_mutation, col=st.integers(0, 4),
       perm=st.permutations(range(5)))
def test_csv_columns_dropped_duplicated_reordered(base, name, kind, col, perm):
    reader = CSV_KINDS[name][0]
    with _example_dir(base) as d:
        rows = _base_csv(name)
        if kind == "drop":
            rows = [r[:col] + r[col + 1:] for r in rows]
        elif kind == "duplicate":
            rows = [r + [r[col]] for r in rows]
        else:
            rows = [[r[i] for i in perm] for r in rows]
        path = os.path.join(d, name)
        open(path, "w").write(_table_text(rows))
        table, msg = _csv_read(path, reader)
        if kind == "reorder":
            assert table is not None, msg
            assert _as_tuple(table) == _expect(rows)
        else:
            assert table is None, f"{kind} column {col} was accepted"
            assert "line 1" in msg, msg


CSV_BAD = NUMERIC_BAD + ["-1.0", "2", "1.5", "-0.0", "1e-300", "0.5"]


@FUZZ
@given(name=st.sampled_from(sorted(CSV_KINDS)), row=st.integers(1, 12), col=st.integers(1, 4),
       bad=st.one_of(st.sampled_from(CSV_BAD + ["+field", "-field"]),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr)))
def test_csv_numeric_fields_out_of_range(base, name, row, col, bad):
    reader = CSV_KINDS[name][0]
    with _example_dir(base) as d:
        rows = _base_csv(name)
        row = row % (len(rows) - 1) + 1
        if bad == "+field":
            rows[row] = rows[row] + ["7"]
        elif bad == "-field":
            rows[row] = rows[row][:-1]
        else:
            rows[row][col] = bad
        path = os.path.join(d, name)
        open(path, "w").write(_table_text(rows))
        table, msg = _csv_read(path, reader)
        if table is not None:
            assert _as_tuple(table) == _expect(rows)
            _check_range(name, table)
        else:
            assert f"line {row + 1}" in msg, msg
            if bad not in ("+field", "-field") and "," not in bad:
                assert f"column {col + 1} ({rows[0][col]!r})" in msg, msg


@FUZZ
@given(name=st.sampled_from(sorted(CSV_KINDS) + ["seriesuids.csv"]),
       where=st.floats(0, 1, exclude_max=True), payload=st.binary(min_size=1, max_size=6),
       truncate=st.booleans())
def test_csv_random_bytes_and_truncation(base, name, where, payload, truncate):
    with _example_dir(base) as d:
        if name == "seriesuids.csv":
            text, reader = _head("seriesuids.csv"), luna16.read_seriesuids
        else:
            rows = _base_csv(name)
            text, reader = _table_text(rows), CSV_KINDS[name][0]
        blob = bytearray(text.encode())
        at = int(where * len(blob))
        if truncate:
            del blob[at:]
        else:
            blob[at:at + len(payload)] = payload
        path = os.path.join(d, name)
        open(path, "wb").write(bytes(blob))
        table, msg = _csv_read(path, reader)
        if table is None:
            return
        if name == "seriesuids.csv":
            assert all(u and "/" not in u and ".." not in u for u in table)
            assert len(set(table)) == len(table)
            if truncate:  # a prefix of the list, the last uid possibly cut short
                full = text.split()
                assert table[:-1] == full[: len(table) - 1]
            return
        _check_range(name, table)
        if truncate:  # a prefix of the table; only the last row may be cut short
            uids, xyz, last = _as_tuple(table)
            e_uids, e_xyz, e_last = _expect(rows)
            n = len(uids)
            assert uids == e_uids[:n] and xyz[:-1] == e_xyz[: n - 1]
            assert last[:-1] == e_last[: n - 1]


def test_real_luna16_files_read_with_ranges():
    """The real files satisfy the range checks (excluded uses -1, annotations does not)."""
    if not os.path.isdir(REAL):
        pytest.skip("real LUNA16 CSVs not available")
    exc = luna16.read_annotations(os.path.join(REAL, "annotations_excluded.csv"))
    assert (exc.diameter_mm == -1).sum() > 1000
    ann = luna16.read_annotations(os.path.join(REAL, "annotations.csv"))
    assert ann.diameter_mm.min() > 0
    with pytest.raises(LUNA16FormatError, match=r"line 2: column 5 \('diameter_mm'\)"):
        luna16.read_annotations(os.path.join(REAL, "annotations_excluded.csv"),
                                unknown_diameter=False)
