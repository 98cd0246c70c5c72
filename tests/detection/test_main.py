"""``python -m nodulejax.detection``: end to end on a tiny trained CG, its progress bars, and
one-line errors for a mistyped model, a wrong --data and bad --folds."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import tiny
from nodulejax.data import luna16, prepare
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.detection import detector as dt
from nodulejax.detection.__main__ import main as detect_main
from nodulejax.runtime.checkpoint import ModelCheckpoints, model_dir
from nodulejax.train import cg

pytestmark = pytest.mark.slow  # the detection CLI end to end on a prepared phantom: ~40 s

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join(ROOT, "configs", "tiny.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("detphantom"))
    generate_dataset(root, num_scans=4, seed=5, size_scale=0.3, num_subsets=4,
                     max_voxels=300_000)
    c = tiny.get_config()
    scans = prepare.prepare_folds(luna16.Luna16Dataset(root), [0, 1], spacing=c.data.spacing,
                                  window=tuple(c.data.hu_window))
    workdir = str(tmp_path_factory.mktemp("detwork"))
    cg.train_cg(c, workdir, scans, progress=False, async_save=False)
    model = dt.fpr_model(c)
    p = int(c.fpr.patch_size)
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, p, p, p, 1), np.float32))
    with ModelCheckpoints(model_dir(workdir, "fpr_test"), config=c, async_save=False) as m:
        m.save(0, {"params": params["params"]})
    return c, root, workdir


def test_cli_end_to_end_with_progress_bars(trained, tmp_path, capsys):
    c, root, workdir = trained
    out = str(tmp_path / "pred.csv")
    assert detect_main(["--config", CFG, "--workdir", workdir, "--data", root, "--out", out,
                        "--folds", "2,3", "--fpr-model", "fpr_test",
                        "--config.train.progress=True"]) == 0
    err = capsys.readouterr().err
    assert "detection: 100%" in err and "2/2" in err and "scan" in err  # the scans' bar
    assert "windows" in err  # each scan's window batches while its candidates are computed
    info = json.load(open(os.path.join(workdir, "candidates", "sensitivity.json")))
    ds = luna16.Luna16Dataset(root)
    uids = ds.uids([2, 3])
    pred = luna16.read_predictions(out, known_uids=uids)
    assert info["n_scans"] == 2 and len(pred.probability) == info["n_rows"] > 0
    assert np.all((pred.probability >= 0) & (pred.probability <= 1))
    assert 0.0 <= info["sensitivity"] <= 1.0
    per_scan = {u: int(np.sum(pred.seriesuid == u)) for u in uids}
    assert max(per_scan.values()) <= c.cg.num_candidates  # the union is capped
    for u in uids:
        assert os.path.exists(os.path.join(workdir, "candidates", f"{u}.npz"))
        vol = ds.load(u)  # world coordinates lie inside each scan's extent
        v = vol.world_to_voxel(pred.xyz[pred.seriesuid == u])
        assert np.all(v > -1) and np.all(v < np.asarray(vol.shape) + 1)
    # the scans were prepared into the study's cache folder
    assert os.listdir(prepare.cache_dir(workdir))
    # second run (no FPR, no bar): candidates come from the cache, same positions
    out2 = str(tmp_path / "pred2.csv")
    assert detect_main(["--config", CFG, "--workdir", workdir, "--data", root, "--out", out2,
                        "--folds", "2,3", "--fpr-model", "none",
                        "--config.train.progress=False"]) == 0
    assert "detection:" not in capsys.readouterr().err
    np.testing.assert_allclose(luna16.read_predictions(out2).xyz, pred.xyz)


@pytest.mark.parametrize("args, names", [
    (["--fpr-model", "baseline-cee"], ["baseline-cee", "nearest: baseline-ce", "fpr_test"]),
    (["--fpr-model", "fpr_beta+syn"], ["fpr_beta+syn", "fpr_test"]),
    (["--fpr-model", "none", "--data", "/no/such/folder"], ["--data /no/such/folder"]),
    (["--fpr-model", "none", "--folds", "8,x"], ["--folds", "8,x"]),
])
def test_user_mistakes_are_one_line_naming_them(trained, capsys, args, names):
    _, _, workdir = trained
    assert detect_main(["--config", CFG, "--workdir", workdir, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in names:
        assert n in err, (n, err)


def test_row_name_is_accepted_and_missing_model_lists_the_workdir(tmp_path):
    """As a user types it (a subprocess): the Table 3 row name works as --fpr-model and a
    workdir without it lists what it has; no JAX computation runs before the error."""
    os.makedirs(tmp_path / "checkpoints" / "fpr_beta+syn")
    r = subprocess.run([sys.executable, "-m", "nodulejax.detection", "--config", CFG,
                        "--workdir", str(tmp_path), "--fpr-model", "baseline-ce"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "fpr_baseline-ce" in r.stderr and "models in" in r.stderr
    assert "fpr_beta+syn" in r.stderr and "Traceback" not in r.stderr
