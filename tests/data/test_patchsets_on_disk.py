"""FPR patch sets on disk (``patchsets.fpr_patches(..., root=...)``): the same patches as the
in-memory set bit for bit, written once and read back, one folder per set's fingerprint, no
partial folder after a failed write. Scans are small random volumes (numpy only)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from nodulejax.data import io, patchsets
from nodulejax.data.patchsets import fpr_patches
from nodulejax.data.patchstore import read_set as read_patch_set
from nodulejax.data.prepare import PreparedScan
from nodulejax.data.records import RecordArray
from nodulejax.errors import RecordsError, WorkdirError


def random_scans(n=3, shape=(24, 26, 28), seed=0) -> list[PreparedScan]:
    """``n`` scans of uniform noise with 2 nodules, an excluded finding and 14 candidates
    each (some near the border, so patches are padded), spacing 1.5 mm."""
    rng = np.random.default_rng(seed)
    geom = io.CTVolume(np.zeros((0, 0, 0), np.float32), np.full(3, 1.5), np.zeros(3),
                       np.eye(3))
    hi = np.array(shape, float)
    out = []
    for i in range(n):
        nod = rng.uniform(2, hi - 2, (2, 3))
        out.append(PreparedScan(
            uid=f"1.2.{i}", fold=i, image=rng.random(shape).astype(np.float32),
            lung=np.ones(shape, bool), geometry=geom, nodules_zyx=nod,
            nodules_diam_mm=np.full(2, 6.0), nodule_types=np.array(["solid"] * 2, object),
            excluded_zyx=rng.uniform(0, hi, (1, 3)), excluded_diam_mm=np.full(1, 4.0),
            cand_zyx=rng.uniform(-2, hi + 2, (14, 3)),
            cand_label=(rng.random(14) < 0.2).astype(int)))
    return out


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_patch_set_on_disk_equals_the_in_memory_set(tmp_path):
    scans = random_scans()
    for kw in ({}, {"max_neg_per_scan": 3, "seed": 5}):
        mem = fpr_patches(scans, 10, **kw)
        disk = fpr_patches(scans, 10, root=str(tmp_path), **kw)
        assert isinstance(disk["x"], RecordArray) and sorted(disk) == sorted(mem)
        assert len(mem["x"]) > 10 and (mem["y"] == 1).sum() == 6
        for k in mem:
            assert _same(disk[k], mem[k]), k
        folder = os.path.dirname(disk["x"].path)
        assert sorted(os.listdir(folder)) == ["manifest.json", "scan.npy", "x.npy", "y.npy",
                                              "zyx.npy"]
        assert _same(np.load(os.path.join(folder, "x.npy")), mem["x"])  # plain .npy files


def test_a_second_call_reads_the_set_back_and_other_inputs_get_their_own_folder(
        tmp_path, monkeypatch):
    scans, root = random_scans(), str(tmp_path)
    first = fpr_patches(scans, 10, root=root)

    def no_cutting(*a, **k):
        raise AssertionError("the patches were cut again")

    with monkeypatch.context() as m:
        m.setattr(patchsets, "extract_patch", no_cutting)
        again = fpr_patches(scans, 10, root=root)
        # the seed draws only capped negatives: without a cap it is the same set
        also = fpr_patches(scans, 10, root=root, seed=7)
    assert again["x"].path == first["x"].path == also["x"].path
    assert _same(again["x"][:], first["x"][:])
    others = [fpr_patches(scans, 12, root=root), fpr_patches(scans[:2], 10, root=root),
              fpr_patches(scans, 10, root=root, neg_radius_mm=5.0),
              fpr_patches(scans, 10, root=root, max_neg_per_scan=2, seed=1),
              fpr_patches(scans, 10, root=root, max_neg_per_scan=2, seed=2)]
    folders = {os.path.dirname(d["x"].path) for d in [first] + others}
    assert len(folders) == 6 and sorted(os.listdir(root)) == sorted(
        os.path.basename(f) for f in folders)  # no temp folders left
    assert os.path.basename(others[0]["x"].path) == "x.npy"
    assert os.path.basename(os.path.dirname(others[0]["x"].path)).startswith("fpr_p12_")


def test_a_failed_or_killed_write_leaves_no_folder(tmp_path, monkeypatch):
    scans, root = random_scans(), str(tmp_path / "patches")
    calls = []
    cut = patchsets.extract_patch

    def dies_midway(*a, **k):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt("killed while cutting")
        return cut(*a, **k)

    monkeypatch.setattr(patchsets, "extract_patch", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        fpr_patches(scans, 10, root=root)
    assert os.listdir(root) == []
    monkeypatch.setattr(patchsets, "extract_patch", cut)
    # a writer killed on this host left its temp folder; another host's writer is busy
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(root, f".fpr_p10_0.tmp-{socket.gethostname()}-{dead.pid}")
    busy = os.path.join(root, f".fpr_p10_0.tmp-elsewhere-{dead.pid}")
    for d in (stale, busy):
        os.makedirs(d)
        open(os.path.join(d, ".x.npy.tmp1"), "wb").write(b"partial")
    assert _same(fpr_patches(scans, 10, root=root)["x"][:], fpr_patches(scans, 10)["x"])
    assert not os.path.exists(stale) and os.path.exists(busy)


def test_a_damaged_set_fails_with_its_folder_named(tmp_path):
    scans, root = random_scans(), str(tmp_path)
    folder = os.path.dirname(fpr_patches(scans, 10, root=root)["x"].path)
    manifest = os.path.join(folder, "manifest.json")
    with open(manifest) as f:
        m = json.load(f)
    m["fingerprint"]["patch_size"] = 11
    with open(manifest, "w") as f:
        json.dump(m, f)
    with pytest.raises(WorkdirError, match="other settings or scans"):
        fpr_patches(scans, 10, root=root)
    assert read_patch_set(folder)["y"].shape == (m["count"],)  # no fingerprint asked: reads
    os.remove(os.path.join(folder, "y.npy"))
    with pytest.raises(WorkdirError, match="unreadable patch set"):
        read_patch_set(folder)
    x = os.path.join(folder, "x.npy")
    with open(x, "r+b") as f:
        f.truncate(os.path.getsize(x) - 1)
    with pytest.raises(RecordsError, match="x.npy: truncated"):
        RecordArray(x)


def test_seg_background_and_positive_sets_on_disk_equal_the_in_memory_ones(tmp_path):
    """Every patch set the stages cut (segmentation patches, the pool's and in-loop
    synthesis's lung backgrounds, the real positives) reads back from disk with the in-memory
    set's values, dtypes and metadata; a second call reads the set instead of cutting it."""
    from nodulejax.data import backgrounds
    from nodulejax.data.records import LazyRows

    scans = random_scans()
    for s in scans:  # a lung with room for backgrounds away from the findings
        s.lung = np.zeros(s.image.shape, bool)
        s.lung[4:20, 4:22, 4:24] = True
        s.image = s.image.astype(np.float16).astype(np.float32)  # the prepared precision
    root = str(tmp_path)
    mem, disk = patchsets.seg_patches(scans, 10, seed=3), patchsets.seg_patches(scans, 10,
                                                                                 seed=3, root=root)
    for k in ("x", "mask"):
        assert isinstance(disk[k], LazyRows) and disk[k].dtype == mem[k].dtype
        assert _same(disk[k][:], mem[k])
    for fn, args in ((backgrounds.background_patches, (8, 2, 5)),
                     (backgrounds.positive_patches, (8,))):
        (xm, um, cm), (xd, ud, cd) = fn(scans, *args), fn(scans, *args, root=root)
        assert isinstance(xd, LazyRows) and xd.dtype == xm.dtype == np.float32
        assert _same(xd[:], xm) and _same(xd[np.array([3, 0, 3])], xm[[3, 0, 3]])
        np.testing.assert_array_equal(ud, um)
        np.testing.assert_array_equal(cd, cm)
        assert cd.dtype == cm.dtype == np.int64
    names = sorted(n.split("_")[0] for n in os.listdir(root))
    assert names == ["bg", "pos", "seg"]
    again = patchsets.seg_patches(scans, 10, seed=3, root=root)
    assert again["x"].path == disk["x"].path
