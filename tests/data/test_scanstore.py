"""The prepared-scan store (data/scanstore.py): bit-equal read-back by block, atomic writes,
clear errors, and host memory that does not grow with the number of scans read."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nodulejax.data import scanstore
from nodulejax.errors import WorkdirError


def _arrays(rng, shape=(9, 13, 11)):
    image = rng.random(shape).astype(np.float16).astype(np.float32)
    lung = rng.random(shape) < 0.3
    seg = np.zeros(shape, np.uint8)
    seg[2:5, 3:7, 1:4] = 1
    seg[6:9, 8:13, 7:11] = 3  # labels need not be consecutive
    seg[4, 6, 3] = 0
    return image, lung, seg


@pytest.fixture
def stored(tmp_path):
    image, lung, seg = _arrays(np.random.default_rng(0))
    folder = str(tmp_path / "scan")
    scanstore.write_scan(folder, image, lung, seg, spacing=np.ones(3))
    return folder, image, lung, seg


KEYS = [(slice(None),), (slice(2, 7), slice(0, 5), slice(3, 11)), (4,), (4, 5, 6),
        (slice(None, None, -2), 3), (Ellipsis, 2), (slice(-3, None), Ellipsis),
        (slice(5, 5),), (slice(1, 8, 3), slice(2, 12, 4), slice(None, None, -1))]


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_blocks_read_back_bit_equal(stored, key):
    folder, image, lung, seg = stored
    z = scanstore.read_scan(folder)
    for lazy, want in ((z["image"], image), (z["lung"], lung), (z["seg"], seg)):
        got = lazy[key]
        assert got.dtype == want.dtype and got.shape == want[key].shape
        np.testing.assert_array_equal(got, want[key])


def test_whole_arrays_operators_and_metadata(stored):
    folder, image, lung, seg = stored
    z = scanstore.read_scan(folder)
    np.testing.assert_array_equal(np.asarray(z["image"]), image)
    assert z["image"].dtype == np.float32 and z["image"].shape == image.shape
    np.testing.assert_array_equal(z["lung"].counts, lung.reshape(9, -1).sum(1))
    assert z["lung"].any() and z["lung"].sum() == lung.sum()
    np.testing.assert_array_equal(z["seg"] == 3, seg == 3)  # operators read the volume
    np.testing.assert_array_equal(~z["lung"], ~lung)
    assert z["seg"].max() == 3 and z["image"].max() == image.max()
    np.testing.assert_array_equal(z["spacing"], np.ones(3))
    # relabelling maps the boxes (what prepare._relabel does to a cached scan)
    lut = np.array([0, 2, 0, 1], np.uint8)
    np.testing.assert_array_equal(np.asarray(z["seg"].relabel(lut)), lut[seg])
    with pytest.raises(IndexError, match="out of range"):
        z["image"][9]


def test_lung_voxels_are_rows_of_argwhere(stored):
    _, _, lung, _ = stored
    ks = np.random.default_rng(1).integers(0, lung.sum(), 50)
    want = np.argwhere(lung)[ks]
    np.testing.assert_array_equal(scanstore.lung_voxels(lung, ks), want)
    lazy = scanstore.read_scan(stored[0])["lung"]
    np.testing.assert_array_equal(scanstore.lung_voxels(lazy, ks), want)
    with pytest.raises(IndexError):
        scanstore.lung_voxels(lung, [lung.sum()])


def test_no_labels_and_a_killed_writer_leave_no_scan(tmp_path, monkeypatch):
    image, lung, _ = _arrays(np.random.default_rng(2))
    scanstore.write_scan(str(tmp_path / "a"), image, lung, None)
    assert scanstore.read_scan(str(tmp_path / "a"))["seg"] is None

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scanstore.np, "savez", boom)
    with pytest.raises(OSError, match="No space"):
        scanstore.write_scan(str(tmp_path / "b"), image, lung, None)
    assert sorted(os.listdir(tmp_path)) == ["a"]  # no folder, no temp folder
    assert not scanstore.scan_complete(str(tmp_path / "b"))


def test_malformed_files_name_the_file(stored):
    folder = stored[0]
    with pytest.raises(WorkdirError, match="missing"):
        scanstore.read_scan(folder + "_nope")
    path = os.path.join(folder, "image.npy")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(WorkdirError, match="image.npy"):
        scanstore.read_scan(folder)


_RSS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from nodulejax.data import scanstore
    from nodulejax.data.patches import extract_patch
    from nodulejax.data.patchsets import cg_crop_batch
    from nodulejax.data.prepare import PreparedScan
    from nodulejax.data.io import CTVolume

    root, n = sys.argv[1], int(sys.argv[2])
    def status(key):  # kB
        with open("/proc/self/status") as f:
            return next(int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in f)
                        if k == key)

    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    base = status("VmHWM")
    scans = []
    for i in range(n):
        z = scanstore.read_scan(f"{root}/{i}")
        geo = CTVolume(np.zeros((0, 0, 0), np.float32), np.ones(3), np.zeros(3), np.eye(3))
        e3, e = np.zeros((0, 3)), np.zeros(0)
        scans.append(PreparedScan(str(i), 0, z["image"], z["lung"], geo, np.array([[40., 60, 60]]),
                                  np.array([8.0]), np.array(["solid"], object), e3, e, e3,
                                  np.zeros(0, int), seg=z["seg"],
                                  extra={"lung_counts": z["lung"].counts}))
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(n):  # every scan read several times: random crops and patches
        b = cg_crop_batch(scans, 48, 8, rng)
        total += float(b["image"].sum())
    for _ in range(4):
        for s in scans:
            total += float(extract_patch(s.image, (40, 60, 60), 32, 0.0).sum())
            total += float(extract_patch(s.nodule_mask(), (40, 60, 60), 32, 0).sum())
    peak = status("VmHWM")
    print(json.dumps({"base_kb": base, "peak_kb": peak, "total": total}))
""")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_scans(tmp_path):
    """Reading crops of 2N cached scans costs no more memory than of N: the scans stay on
    disk (today's in-memory scans grew by their full size per scan)."""
    rng = np.random.default_rng(3)
    shape = (80, 160, 160)  # 2 M voxels: 4 MB of float16 image per scan
    image = rng.random(shape, np.float32)
    lung = np.zeros(shape, bool)
    lung[10:70, 20:140, 20:140] = True
    seg = np.zeros(shape, np.uint8)
    seg[36:44, 56:64, 56:64] = 1
    n = 12
    for i in range(2 * n):
        scanstore.write_scan(str(tmp_path / str(i)), image, lung, seg, spacing=np.ones(3))
    out = {}
    for k in (n, 2 * n):
        r = subprocess.run([sys.executable, "-c", _RSS, str(tmp_path), str(k)], check=True,
                           capture_output=True, text=True)
        out[k] = json.loads(r.stdout.strip().splitlines()[-1])
    # what n in-memory scans held (float32 image, bool lung, uint8 labels)
    data_kb = n * image.size * (4 + 1 + 1) / 1024
    grow = [out[k]["peak_kb"] - out[k]["base_kb"] for k in (n, 2 * n)]
    assert out[2 * n]["total"] == pytest.approx(2 * out[n]["total"], rel=0.5)  # it read them
    assert grow[1] - grow[0] < 0.1 * data_kb, (grow, data_kb)
    assert grow[1] < 0.5 * data_kb, (grow, data_kb)
