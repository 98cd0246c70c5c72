"""Shared by test_export.py and test_scan.py: a 2-scan phantom, a run folder with tiny
randomly initialised CG / GGO / RPN / FPR (beta+syn) checkpoints saved through the real
checkpoint code and a recorded test FROC, the detector exported from it, and a writer of
DICOM series with pydicom (from its bundled ``CT_small.dcm``). Built once per session (JAX
compiles are the cost), so run the two modules in one pytest call to share it."""

from __future__ import annotations

import copy
import json
import os

import jax
import numpy as np
import pytest

from configs import tiny
from nodulejax.data import luna16
from nodulejax.data.phantom import generate as phantom
from nodulejax.detection.export import export_model
from nodulejax.experiments import row_config
from nodulejax.models.build import cg_model, fpr_model, rpn_model
from nodulejax.runtime.checkpoint import ModelCheckpoints, model_dir

ROW = "beta+syn"
#: a recorded test FROC: 4 scans, thresholds per curve point (descending)
FROC = {"cpm": 0.4321, "cpm_ci": [0.3, 0.55], "n_scans": 4, "n_nodules": 6, "n_detected": 5,
        "sensitivity_at": {k: 0.4321 for k in ("0.125", "0.25", "0.5", "1", "2", "4", "8")},
        "curve": {"fps": [0.0, 0.0, 0.25, 0.75, 1.0, 1.5, 2.0],
                  "sensitivity": [0.0, 0.17, 0.33, 0.5, 0.5, 0.67, 0.83],
                  "thresholds": [None, 0.97, 0.9, 0.8, 0.61, 0.4, 0.2]}}
FROC_THRESHOLD = 0.61  # the lowest threshold with at most 1 FP/scan

_SHARED: dict = {}


def _init_params(c):
    s = int(c.cg.input_size)
    x0 = np.zeros((1, s, s, s, 1), np.float32)
    blob = jax.jit(cg_model(c).init)
    params = {"cg": blob(jax.random.key(0), x0)["params"],
              "cg_ggo": blob(jax.random.key(1), x0)["params"],
              "rpn": jax.jit(rpn_model(c).init)(jax.random.key(2), x0)["params"]}
    p = int(c.fpr.patch_size)
    fpr = jax.jit(fpr_model(row_config(c, ROW)).init)(
        jax.random.key(3), np.zeros((1, p, p, p, 1), np.float32))["params"]
    # weights * 3: the scores of a scan spread over ~0.04 instead of ~0.002 at init, so
    # "scores within 1e-5" tells candidates apart
    params[f"fpr_{ROW}"] = jax.tree.map(lambda a: a * 3.0, fpr)
    return params


def shared(tmp_path_factory):
    """{"config", "root", "workdir", "model", "params"}: built once per session."""
    if "v" not in _SHARED:
        root = str(tmp_path_factory.mktemp("own_phantom"))
        phantom.generate_dataset(root, num_scans=2, seed=7, size_scale=0.3, num_subsets=2,
                                 max_voxels=300_000)
        c = tiny.get_config()
        workdir = str(tmp_path_factory.mktemp("own_run"))
        params = _init_params(c)
        for name, p in params.items():
            with ModelCheckpoints(model_dir(workdir, name), config=c, async_save=False) as m:
                m.save(1, {"params": p})
        froc_dir = os.path.join(workdir, "eval", "froc", ROW)
        os.makedirs(froc_dir)
        with open(os.path.join(froc_dir, "froc.json"), "w") as f:
            json.dump(FROC, f)
        model = os.path.join(str(tmp_path_factory.mktemp("own_model")), "model")
        export_model(workdir, model, ROW)
        _SHARED["v"] = {"config": c, "root": root, "workdir": workdir, "model": model,
                        "params": params, "dataset": luna16.Luna16Dataset(root)}
    return _SHARED["v"]


@pytest.fixture(scope="session")
def own(tmp_path_factory):
    return shared(tmp_path_factory)


# ----------------------------------------------------------------------------- DICOM
def ct_small():
    """pydicom's bundled CT_small.dcm (a real 128 x 128 CT slice)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _ds(v: float) -> str:
    return f"{float(v):.10g}"


def write_pydicom_series(folder, hu, spacing, origin, direction, *, modality="CT",
                         series_uid=None, prefix="IM"):
    """One file per slice written by pydicom from CT_small.dcm's dataset: the (z, y, x) HU
    array ``hu`` on the grid of ``spacing`` (z, y, x mm), ``origin`` (LPS x, y, z of voxel 0)
    and ITK ``direction`` (its third column must be row x column). Returns ``folder``."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    tpl = ct_small()
    os.makedirs(folder, exist_ok=True)
    series_uid = series_uid or generate_uid()
    hu = np.asarray(hu)
    d = np.asarray(direction, np.float64)
    normal = np.cross(d[:, 0], d[:, 1])
    np.testing.assert_allclose(normal, d[:, 2], atol=1e-9)
    for k in range(hu.shape[0]):
        ds = copy.deepcopy(tpl)
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]  # row spacing (y), column (x)
        ds.SliceThickness = _ds(spacing[0])
        ds.ImageOrientationPatient = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
        pos = np.asarray(origin, np.float64) + normal * float(spacing[0]) * k
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.SliceLocation = _ds(pos[2])
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = (np.round(hu[k]).astype(np.int32) + 1024).astype("<i2").tobytes()
        ds.save_as(os.path.join(folder, f"{prefix}{k:04d}.dcm"))
    return folder


def ct_small_series(folder, n_slices=20, *, modality="CT", series_uid=None, prefix="IM"):
    """A real CT series: CT_small.dcm's slice, shifted a little from slice to slice, at
    2.5 mm, placed where CT_small lies (its IPP, IOP and pixel spacing)."""
    tpl = ct_small()
    hu = tpl.pixel_array.astype(np.float32) * float(tpl.RescaleSlope) + float(
        tpl.RescaleIntercept)
    vol = np.stack([np.roll(hu, (k // 2, k // 3), axis=(0, 1)) for k in range(n_slices)])
    sp = [2.5, float(tpl.PixelSpacing[0]), float(tpl.PixelSpacing[1])]
    iop = np.asarray(tpl.ImageOrientationPatient, np.float64)
    direction = np.column_stack([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])])
    return write_pydicom_series(folder, vol, sp, np.asarray(tpl.ImagePositionPatient, float),
                                direction, modality=modality, series_uid=series_uid,
                                prefix=prefix)
