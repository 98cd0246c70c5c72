"""``python -m nodulejax.detection detect``: the study's answer on a scan given as NIfTI and as
a DICOM series, every output on a real CT series (pydicom's CT_small.dcm), and each refused
input as one line, exit code 2 and nothing written."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest

from nodulejax.data import io, prepare
from nodulejax.detection import scan as own_scan
from nodulejax.detection.__main__ import main
from nodulejax.detection.export import load_model
from nodulejax.detection.run import detect_scans
from nodulejax.experiments import row_config
from tests.detection.conftest import ROW, ct_small_series, write_pydicom_series

pytestmark = pytest.mark.slow  # detect on MetaImage, NIfTI and DICOM copies of a scan


@pytest.fixture(scope="module")
def model(own):
    return load_model(own["model"])


@pytest.fixture(scope="module")
def study_answer(own):
    """The study's detection of the phantom's first scan: prepared from the LUNA16 layout
    (``prepare.prepare_scan``) and detected as ``stage_detect`` does (``detect_scans`` with
    the CG params, then with the FPR params)."""
    c, ds = own["config"], own["dataset"]
    uid = ds.uids()[0]
    s = prepare.prepare_scan(ds, uid, spacing=float(c.data.spacing),
                             window=tuple(c.data.hu_window))
    p = own["params"]
    cg = {k: p[k] for k in ("cg", "cg_ggo", "rpn")}
    cfg = row_config(c, ROW)
    rows, _ = detect_scans(cfg, [s], cg_params=cg, fpr_params=p[f"fpr_{ROW}"], progress=False)
    return uid, s, np.array([r[1:4] for r in rows]), np.array([r[4] for r in rows])


def _as_nifti(vol, path):
    io.save_ct(vol, path)
    return path


def _as_dicom(vol, path):
    return write_pydicom_series(path, vol.array, vol.spacing, vol.origin, vol.direction)


@pytest.mark.parametrize("fmt", ["mhd", "nifti", "dicom"])
def test_same_candidates_and_scores_as_the_study(own, model, study_answer, tmp_path, fmt):
    uid, s, xyz, prob = study_answer
    src = own["dataset"].path(uid)
    vol = io.load_ct(src)
    path = {"mhd": lambda: src, "nifti": lambda: _as_nifti(vol, str(tmp_path / "s.nii.gz")),
            "dicom": lambda: _as_dicom(vol, str(tmp_path / "dcm"))}[fmt]()
    v = own_scan.read_scan(path)
    if fmt == "dicom":
        assert len(v.files) == vol.shape[0]
    f = own_scan.find_nodules(model, own_scan.prepare(v, model.config, uid))
    assert len(f) == len(prob) > 0
    # each study detection has its twin: world position within 0.5 voxel, score within 1e-5
    d = np.linalg.norm(xyz[:, None, :] - f.world[None, :, :], axis=-1)
    twin = d.argmin(1)
    assert sorted(twin) == list(range(len(f)))
    assert d.min(1).max() < 0.5 * s.spacing, d.min(1).max()
    np.testing.assert_allclose(f.probability[twin], prob, rtol=0, atol=1e-5)
    assert np.all(np.diff(f.probability) <= 0)  # by descending probability
    # the original file's voxel indices point at the same world position
    np.testing.assert_allclose(vol.voxel_to_world(f.voxel), f.world, atol=1e-3)


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory):
    return ct_small_series(str(tmp_path_factory.mktemp("ct_small") / "chest"))


def test_end_to_end_on_a_real_ct_series_writes_every_output(own, ct_series, tmp_path, capsys):
    out = tmp_path / "result"
    assert main(["detect", "--model", own["model"], "--scan", ct_series, "--out", str(out),
                 "--threshold", "0"]) == 0
    cap = capsys.readouterr()
    for bar in ("read", "prepare", "candidates", "scoring", "images"):
        assert f"{bar}: 100%" in cap.err, bar
    assert "time per scan:" in cap.out and "report.md" in cap.out
    rows = list(csv.DictReader(open(out / "detections.csv")))
    assert rows and list(rows[0]) == list(own_scan.COLUMNS)
    assert len(rows) == len(list(csv.DictReader(open(out / "candidates.csv"))))
    p = [float(r["probability"]) for r in rows]
    assert p == sorted(p, reverse=True) and all(0 <= x <= 1 for x in p)
    vol = io.load_ct(ct_series)
    files = {os.path.basename(f) for f in vol.files}
    for r in rows:
        assert r["source"] and set(r["source"].split("+")) <= {"blob", "GGO", "RPN"}
        assert r["file"] in files and 0 <= float(r["diameter_mm"]) <= 30
        ijk = np.array([int(r["voxelX"]), int(r["voxelY"]), int(r["voxelZ"])])
        assert np.all(ijk >= 0) and np.all(ijk < np.asarray(vol.shape)[::-1])
        assert os.path.basename(vol.files[ijk[2]]) == r["file"]
        w = vol.voxel_to_world(ijk[::-1].astype(float))
        xyz = np.array([float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])])
        assert np.all(np.abs(w - xyz) <= np.asarray(vol.spacing)[::-1] / 2 + 1e-3)
    names = sorted(os.listdir(out))
    pngs = [n for n in names if n.startswith("finding_")]
    assert pngs == [f"finding_{k:02d}.png" for k in range(1, len(rows) + 1)]
    for n in pngs + ["overview.png"]:
        assert (out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "![overview](overview.png)" in report and "set by --threshold" in report
    assert report.index("finding_01.png") < report.index(f"finding_{len(rows):02d}.png")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp folder left


def test_default_threshold_is_the_models_and_said(own, ct_series, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["detect", "--model", own["model"], "--scan", ct_series, "--out", str(out),
                 "--noprogress"]) == 0
    cap = capsys.readouterr()
    assert "0.61" in cap.out and "1 FP/scan" in cap.out and "100%" not in cap.err
    assert "0.61" in (out / "report.md").read_text()
    p = [float(r["probability"]) for r in csv.DictReader(open(out / "detections.csv"))]
    assert all(x >= 0.61 for x in p)
    # --out exists now: refused unless --overwrite
    assert main(["detect", "--model", own["model"], "--scan", ct_series, "--out",
                 str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_series_flag_picks_one_of_several(own, tmp_path, capsys):
    folder = str(tmp_path / "two")
    ct_small_series(folder, 20, series_uid="1.2.826.0.1.3680043.8.498.1", prefix="A")
    ct_small_series(folder, 20, series_uid="1.2.826.0.1.3680043.8.498.2", prefix="B")
    out = tmp_path / "picked"
    assert main(["detect", "--model", own["model"], "--scan", folder, "--out", str(out),
                 "--series", "1.2.826.0.1.3680043.8.498.2", "--noprogress"]) == 0
    assert (out / "report.md").exists()


# ----------------------------------------------------------------------------- refusals
def _bad_scan(case, tmp_path, own):
    if case == "unreadable":
        p = tmp_path / "chest.nii.gz"
        p.write_bytes(b"\x1f\x8b not really gzip")
        return str(p), ["chest.nii.gz"]
    if case == "unsupported":
        p = tmp_path / "chest.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n")
        return str(p), ["unknown CT format", "chest.png"]
    if case == "not_ct":
        return ct_small_series(str(tmp_path / "mr"), 20, modality="MR"), ["'MR'", "not CT"]
    if case == "too_small":
        return ct_small_series(str(tmp_path / "thin"), 3), ["too small", "16 voxels"]
    if case == "several_series":
        folder = str(tmp_path / "two")
        ct_small_series(folder, 20, series_uid="1.2.826.0.1.3680043.8.498.1", prefix="A")
        ct_small_series(folder, 20, series_uid="1.2.826.0.1.3680043.8.498.2", prefix="B")
        return folder, ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                        "--series UID"]
    raise AssertionError(case)


def _bad_model(case, tmp_path, own):
    m = str(tmp_path / "model")
    shutil.copytree(own["model"], m)
    if case == "model_incomplete":
        shutil.rmtree(os.path.join(m, "params", "fpr"))
        return m, ["incomplete", "params/fpr"]
    with open(os.path.join(m, "model.md"), "a") as f:  # "digest_mismatch"
        f.write("edited\n")
    return m, ["digest mismatch", "model.md"]


@pytest.mark.parametrize("case", ["unreadable", "unsupported", "not_ct", "too_small",
                                  "several_series", "model_incomplete", "digest_mismatch"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(own, tmp_path, capsys, case):
    work = tmp_path / "in"
    work.mkdir()
    if case.startswith(("model", "digest")):
        model, words = _bad_model(case, work, own)
        scan, _ = ct_small_series(str(work / "ok"), 20), None
    else:
        model = own["model"]
        scan, words = _bad_scan(case, work, own)
    outdir = tmp_path / "outs"
    outdir.mkdir()
    out = outdir / "result"
    assert main(["detect", "--model", model, "--scan", scan, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert os.listdir(outdir) == []  # nothing written, no temporary folder left


def test_estimated_diameter_of_a_ball():
    img = np.zeros((40, 40, 40), np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
    img[(zz - 20) ** 2 + (yy - 19) ** 2 + (xx - 21) ** 2 <= 5 ** 2] = 0.8  # 10 voxels across
    d = own_scan.estimate_diameter(img, (20, 19, 21), 1.5, 0.3)
    assert abs(d - 15.0) <= 1.5
    assert own_scan.estimate_diameter(img, (5, 5, 5), 1.5, 0.3) == 0.0
    assert own_scan.estimate_diameter(np.ones_like(img), (20, 20, 20), 1.0, 0.3) == 30.0


def test_a_cached_scan_detects_as_the_in_memory_one(own, study_answer, tmp_path):
    """The study's scans come from the cache, lazy (detection reads the image window by
    window from disk and the lung mask once): the same rows as the in-memory scan."""
    c, ds = own["config"], own["dataset"]
    uid, _, xyz, prob = study_answer
    kw = dict(spacing=float(c.data.spacing), window=tuple(c.data.hu_window),
              cache_dir=str(tmp_path))
    prepare.prepare_scan(ds, uid, **kw)  # writes the cache
    lazy = prepare.prepare_scan(ds, uid, **kw)  # reads it back
    assert not isinstance(lazy.image, np.ndarray) and not isinstance(lazy.lung, np.ndarray)
    p = own["params"]
    rows, _ = detect_scans(row_config(c, ROW), [lazy], cg_params={k: p[k] for k in
                                                                   ("cg", "cg_ggo", "rpn")},
                           fpr_params=p[f"fpr_{ROW}"], progress=False)
    np.testing.assert_array_equal(np.array([r[1:4] for r in rows]), xyz)
    np.testing.assert_array_equal(np.array([r[4] for r in rows]), prob)
