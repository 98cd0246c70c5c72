"""nodulejax.data.records: on-disk arrays read by row equal the arrays written, bit for bit;
the writer finalises atomically; broken files fail with the file's name; memory stays flat
in the data size (a subprocess, no JAX)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from nodulejax.data.records import ConcatRecords, RecordArray, Subset, write_records
from nodulejax.errors import RecordsError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _data(dtype, n=23, tail=(3, 4, 5), seed=0):
    rng = np.random.default_rng(seed)
    if dtype is bool:
        return rng.random((n,) + tail) > 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-1000, 1000, (n,) + tail).astype(dtype)
    return (rng.standard_normal((n,) + tail) * 100).astype(dtype)


def _same(a, b):
    """Bit-equal: dtype, shape and bytes."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


KEYS = [5, -1, slice(None), slice(2, 19, 3), slice(None, None, -2), [4, 1, 4, 22, 0, 1],
        np.array([[3, 2], [2, 3]]), np.array([], int), "mask", (7, 1, slice(1, 3)),
        ([2, 0], 0)]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, bool, np.int32, np.uint8])
def test_rows_read_back_bit_equal(tmp_path, dtype):
    a = _data(dtype)
    path = str(tmp_path / "a.npy")
    assert write_records(path, (r for r in a), a.shape[1:], dtype, count=len(a)) == len(a)
    assert _same(np.load(path), a)  # a plain .npy numpy reads
    r = RecordArray(path)
    assert (r.shape, r.dtype, len(r), r.ndim) == (a.shape, np.dtype(dtype), len(a), 4)
    mask = a.reshape(len(a), -1)[:, 0] > a.reshape(len(a), -1)[:, 0].mean()
    for key in KEYS:
        key = mask if isinstance(key, str) else key
        assert _same(r[key], a[key]), key
    assert _same(np.asarray(r), a) and _same(r.take([9, 2, 9]), a[[9, 2, 9]])


def test_blocks_of_rows_and_an_empty_file(tmp_path):
    a = _data(np.float16, n=10)
    write_records(tmp_path / "b.npy", [a[:3], a[3], a[4:]], a.shape[1:], np.float16)
    assert _same(np.asarray(RecordArray(tmp_path / "b.npy")), a)
    write_records(tmp_path / "e.npy", [], (2, 2), np.int32)
    e = RecordArray(tmp_path / "e.npy")
    assert e.shape == (0, 2, 2) and _same(e[:], np.zeros((0, 2, 2), np.int32))
    with pytest.raises(IndexError, match="e.npy"):
        e[0]


def test_shards_and_npz_members_read_as_one_array(tmp_path):
    """Three shards (a .npy and two np.savez archives, as the pool writes them) end to end:
    every index form, across shard boundaries, equals the concatenation."""
    parts = [_data(np.float16, n, seed=n) for n in (5, 1, 9)]
    write_records(tmp_path / "s0.npy", parts[0], parts[0].shape[1:], np.float16)
    np.savez(tmp_path / "s1.npz", x=parts[1], item=np.arange(1))
    np.savez(tmp_path / "s2.npz", item=np.arange(9), x=parts[2])  # x not the first member
    c = ConcatRecords([RecordArray(tmp_path / "s0.npy"), RecordArray(tmp_path / "s1.npz", "x"),
                       RecordArray(tmp_path / "s2.npz", "x")])
    a = np.concatenate(parts)
    rng = np.random.default_rng(1)
    for key in (slice(None), slice(3, 8), [4, 5, 6, 14, 0], rng.integers(0, 15, 40), 5, -1):
        assert _same(c[key], a[key]), key
    # a subset of the shards, in any order, and a subset of a subset
    idx = rng.permutation(15)[:9]
    s = Subset(c, idx)
    assert len(s) == 9 and s.shape == (9,) + a.shape[1:]
    assert _same(s[:], a[idx]) and _same(s[[8, 0, 0]], a[idx[[8, 0, 0]]])
    assert _same(Subset(s, [2, 1])[:], a[idx[[2, 1]]])
    assert _same(Subset(a, idx)[::-1], a[idx[::-1]])  # over an in-memory array too
    assert _same(RecordArray(tmp_path / "s2.npz", "item")[:], np.arange(9))


def test_a_failed_writer_leaves_no_file(tmp_path):
    a = _data(np.float32, n=6)

    def rows():
        yield from a[:4]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        write_records(tmp_path / "x.npy", rows(), a.shape[1:], np.float32)
    with pytest.raises(RecordsError, match="4 rows written, 6 expected"):
        write_records(tmp_path / "x.npy", a[:4], a.shape[1:], np.float32, count=6)
    with pytest.raises(RecordsError, match="neither"):
        write_records(tmp_path / "x.npy", [np.zeros((2, 2))], a.shape[1:], np.float32)
    assert os.listdir(tmp_path) == []  # neither the target nor a temp file


def test_a_killed_writer_leaves_no_file(tmp_path):
    """SIGKILL in the middle of writing: the target never appears (only a hidden temp file
    may remain)."""
    target = tmp_path / "x.npy"
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        sys.path.insert(0, {ROOT!r})
        from nodulejax.data.records import write_records
        def rows():
            for i in range(1000):
                if i == 5:
                    open({str(tmp_path / "ready")!r}, "w").close()
                    time.sleep(60)
                yield np.full((8, 8), i, np.float32)
        write_records({str(target)!r}, rows(), (8, 8), np.float32)
    """)
    p = subprocess.Popen([sys.executable, "-c", script])
    try:
        t0 = time.time()
        while not (tmp_path / "ready").exists():
            assert p.poll() is None and time.time() - t0 < 60, "the writer did not start"
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not target.exists()
    assert all(f.startswith(".") for f in os.listdir(tmp_path) if f != "ready")


def test_missing_truncated_and_malformed_files_name_the_file(tmp_path):
    a = _data(np.float16, n=8)
    path = str(tmp_path / "a.npy")
    write_records(path, a, a.shape[1:], np.float16)
    with pytest.raises(RecordsError, match="nowhere.npy: missing"):
        RecordArray(tmp_path / "nowhere.npy")
    with open(path, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.npy"
    cut.write_bytes(data[:-10])
    with pytest.raises(RecordsError, match="cut.npy: truncated"):
        RecordArray(cut)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file at all")
    with pytest.raises(RecordsError, match="bad.npy: not a readable .npy header"):
        RecordArray(bad)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], object), allow_pickle=True)
    with pytest.raises(RecordsError, match="obj.npy: dtype object"):
        RecordArray(tmp_path / "obj.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(a[:, :, :, 0]))
    with pytest.raises(RecordsError, match="f.npy: Fortran-order"):
        RecordArray(tmp_path / "f.npy")
    # a file truncated after it was opened: the read fails with the file's name
    r = RecordArray(path)
    with open(path, "r+b") as f:
        f.truncate(len(data) - 3 * r.row_bytes)
    assert _same(r[:5], a[:5])
    with pytest.raises(RecordsError, match="a.npy: truncated"):
        r[[1, 7]]
    # out of range and bad indices
    write_records(path, a, a.shape[1:], np.float16)
    r = RecordArray(path)
    for key in (8, -9, [0, 8], np.array([-9])):
        with pytest.raises(IndexError, match="a.npy"):
            r[key]
    with pytest.raises(IndexError, match="a.npy"):
        r[np.ones(3, bool)]
    with pytest.raises(IndexError, match="integers"):
        r[np.array([0.5])]


def test_npz_members_that_cannot_be_read_by_row(tmp_path):
    a = _data(np.float16, n=4)
    np.savez_compressed(tmp_path / "c.npz", x=a)
    with pytest.raises(RecordsError, match="c.npz:x: compressed member"):
        RecordArray(tmp_path / "c.npz", "x")
    np.savez(tmp_path / "u.npz", y=a)
    with pytest.raises(RecordsError, match="u.npz:x: no member 'x.npy'"):
        RecordArray(tmp_path / "u.npz", "x")
    (tmp_path / "z.npz").write_bytes(b"PK but not a zip")
    with pytest.raises(RecordsError, match="z.npz: not a readable .npz"):
        RecordArray(tmp_path / "z.npz", "x")
    with zipfile.ZipFile(tmp_path / "u.npz") as z:  # the member's bytes, cut short
        raw = (tmp_path / "u.npz").read_bytes()[:z.getinfo("y.npy").header_offset + 200]
    (tmp_path / "t.npz").write_bytes(raw)
    with pytest.raises(RecordsError, match="t.npz"):
        RecordArray(tmp_path / "t.npz", "y")


# ------------------------------------------------------------------------ memory in data size
_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from nodulejax.data.records import ConcatRecords, RecordArray, write_records

    folder, n, mode = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    P, B = 32, 64

    def rows(start, stop):  # row i is filled with i % 2048 (exact in float16); nothing kept
        row = np.empty((P, P, P), np.float16)
        for i in range(start, stop):
            row.fill(i % 2048)
            yield row

    half = n // 2
    paths = [f"{folder}/a.npy", f"{folder}/b.npy"]
    write_records(paths[0], rows(0, half), (P, P, P), np.float16)
    write_records(paths[1], rows(half, n), (P, P, P), np.float16)
    def rss():  # peak RSS of this process image, bytes (ru_maxrss would include the parent's)
        with open("/proc/self/status") as f:
            return 1024 * int(next(v for v in f if v.startswith("VmHWM:")).split()[1])

    base = rss()
    if mode == "records":
        x = ConcatRecords([RecordArray(p) for p in paths])
    else:  # control: one long-lived memory map per shard
        x = [np.load(p, mmap_mode="r") for p in paths]
    order = np.random.default_rng(0).permutation(n)
    total = 0.0
    for k in range(0, n, B):
        idx = order[k:k + B]
        if mode == "records":
            b = x[idx]
        else:
            b = np.stack([x[0][i] if i < half else x[1][i - half] for i in idx])
        assert np.array_equal(b[:, 0, 0, 0], (idx % 2048).astype(np.float16))
        total += float(b[:, P // 2, P // 2, P // 2].astype(np.float64).sum())
    print(json.dumps({"base": base, "peak": rss(), "data": n * P ** 3 * 2, "total": total}))
""")


def _peak(tmp_path, n, mode):
    folder = tmp_path / f"{mode}{n}"
    folder.mkdir()
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, ROOT, str(folder), str(n), mode],
                         capture_output=True, text=True, timeout=300, check=True)
    for f in folder.iterdir():
        f.unlink()
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's VmHWM")
def test_peak_memory_does_not_grow_with_the_data(tmp_path):
    """Reading every row of 200 MB and of 400 MB of 32^3 float16 records (two shards, random
    order, batches of 64) raises the process's peak RSS by the same ~25 MB; a long-lived
    np.memmap (the control) keeps every page it touched. The peak is the fresh interpreter's
    ``VmHWM``: ``ru_maxrss`` of a child started by ``subprocess`` (vfork + exec) starts at the
    parent's RSS, here pytest's with JAX loaded. Writes and reads 0.8 GB: ~2 s."""
    n = 3200  # 3200 * 64 KiB = 200 MiB
    small, large = _peak(tmp_path, n, "records"), _peak(tmp_path, 2 * n, "records")
    data = small["data"]
    for r in (small, large):  # measured: base ~29 MB, peak ~53 MB for both
        assert r["peak"] - r["base"] < 0.25 * data and r["peak"] < 0.35 * data, r
    assert large["peak"] - small["peak"] < 0.1 * data, (small, large)
    control = _peak(tmp_path, n, "memmap")
    assert control["peak"] - control["base"] > 0.5 * data, control
