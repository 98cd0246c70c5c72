"""benchmarks/patch_reading.py at smoke size: every reader (in memory, ``.npy`` records read
by row or memory-mapped, the TFDS ArrayRecord data source) and every loader (inline,
Prefetcher, threads; Grain where it imports) gives the same batches bit for bit for the same
indices, and the results JSON has its fields."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import patch_reading as bench  # noqa: E402

from nodulejax.data.patches import NUM_SYMMETRIES, symmetry  # noqa: E402

pytestmark = pytest.mark.skipif(bench.tfds is None, reason="tensorflow-datasets not installed")


def test_readers_and_loaders_give_identical_batches(tmp_path):
    x, y = bench.make_patches(32, 8, seed=3)
    assert x.dtype == np.float16 and 0 <= x.min() and x.max() <= 1 and 0 < y.sum() < 32
    files = {"npy": bench.write_npy(str(tmp_path), x, y)}
    builder, files["tfds"] = bench.write_tfds(str(tmp_path), x, y)
    readers = bench.open_readers(bench.READERS, x, files, builder)
    idx = np.array([5, 0, 31, 5, 17])  # any order, repeats
    for name, r in readers.items():
        assert bench.same_bits(r[idx], x[idx]), name
        assert bench.same_bits(r[7], x[7]), name

    pipes = {name: bench.Pipeline(r, y, 4, 8, seed=1) for name, r in readers.items()}
    ref = [pipes["memory"].fn(s) for s in range(3)]
    loaders = ["inline", "prefetch", "threads"] + (["grain"] if bench.grain_available() else [])
    for name, pipe in pipes.items():
        for lo in loaders:
            got = list(bench.iterate(pipe, lo, 0, 3, depth=2, workers=2))
            assert len(got) == 3
            for g, r in zip(got, ref, strict=True):
                assert bench.same_bits(g[0], r[0]) and bench.same_bits(g[1], r[1]), (name, lo)
        rows = pipe.examples(1, 2)[0]
        assert bench.same_bits(next(bench.iterate(pipe, "read", 1, 2, depth=2, workers=1)),
                               x[np.sort(rows)])

    # each example is its row under one of the cube symmetries, cast to float32, and the
    # labels are the rows' labels (50/50)
    rows, _, labels = pipes["memory"].examples(0, 3)
    bx = np.concatenate([r[0] for r in ref])
    by = np.concatenate([r[1] for r in ref])
    assert bx.dtype == np.float32 and bx.shape == (12, 8, 8, 8)
    assert np.array_equal(by, y[rows]) and np.array_equal(by, labels) and by.sum() == 6
    for k, row in enumerate(rows):
        assert any(np.array_equal(bx[k], symmetry(x[row], s).astype(np.float32))
                   for s in range(NUM_SYMMETRIES))
    assert any(not np.array_equal(bx[k], x[row].astype(np.float32))
               for k, row in enumerate(rows))  # the symmetry is applied


def test_main_writes_the_results_json(tmp_path):
    out, data_dir = tmp_path / "r.json", tmp_path / "data"
    res = bench.main(["--n", "32", "--patch", "8", "--batch", "4", "--steps", "2",
                      "--repeats", "2", "--skip-train", "--dir", str(data_dir),
                      "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["identical"] == res["identical"] and all(r["identical"].values())
    for key in ("date", "command", "device", "host", "cpu_model", "cores", "versions",
                "loadavg_1min_before", "files", "throughput", "cold", "reference_consumption"):
        assert key in r, key
    for dist in ("numpy", "jax", "tensorflow-datasets", "array-record"):
        assert r["versions"][dist], dist
    assert "grain" in r["versions"]
    assert r["train"] is None and r["batch"] == 4 and r["patch"] == 8
    assert set(r["throughput"]) == set(bench.READERS)
    for row in r["throughput"].values():
        for lo in ("read", "inline", "prefetch", "threads"):
            assert len(row[lo]["runs"]) == 2 and row[lo]["patches_per_s"] > 0
    assert set(r["cold"]) == {"npy", "mmap", "tfds"}
    assert all(c["patches_per_s"] > 0 for c in r["cold"].values())
    assert r["files"]["npy"]["bytes"] >= 32 * 8 ** 3 * 2
    assert os.listdir(data_dir) == []  # the data folder is removed
