"""nodulejax.evaluation.stress (Tables 4-6), nodulejax.evaluation.figures (Figs. 5, 6, 8, 9)
and attack.py's CLI, on the session setup of tests/adversarial/pool/test_build.py (tiny
phantom, briefly trained DenseUNet3D FPR saved through the real checkpoint code, blob
generator)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nodulejax.evaluation import figures, stress
from tests.adversarial.pool.test_build import shared_setup

MODELS = ["baseline-beta-finetune", "fpr_beta+syn"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    config, workdir, gen, scans = shared_setup(tmp_path_factory)
    c = config.copy_and_resolve_references()
    c.pgd.latent_steps = 10  # traced: no recompilation
    c.pgd.image_steps = 5
    c.stress.negatives_per_scan = 2
    out = str(tmp_path_factory.mktemp("stress"))
    return stress.run_stress(c, workdir, scans, MODELS, out, generator=gen), out, c


def test_stress_writes_tables_4_to_6(result):
    res, out, c = result
    with open(os.path.join(out, "stress.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    md = open(os.path.join(out, "stress.md"), encoding="utf-8").read()
    for t in ("Table 4", "Table 5", "Table 6"):
        assert t in md
    cols = {"table4": stress.TABLE4_COLUMNS, "table5": stress.table5_columns(c),
            "table6": stress.TABLE6_COLUMNS}
    assert len(cols["table5"]) == len(c.stress.uniform_levels) + len(c.stress.poisson_scales) + 1
    for table, names in cols.items():
        assert set(on_disk[table]) == {"baseline-beta-finetune", "beta+syn"}
        for model, row in on_disk[table].items():
            assert f"| {model} |" in md
            for col in names:
                st = row[col]
                assert st["n"] > 0, (table, model, col)
                assert 0.0 <= st["mean"] <= 1.0 and 0.0 <= st["std"] <= 0.5
                assert f"{st['mean']:.2f} ± {st['std']:.2f}" in md
    s = on_disk["settings"]
    assert s["num_negatives"] == 2 * 4 and s["num_noise"] == s["num_negatives"]
    assert on_disk["table5"]["beta+syn"]["Adv."]["n"] == s["num_positives"]


def test_table4_pgd_nodules_get_lower_confidence(result):
    res, _, _ = result
    row = res["table4"]["baseline-beta-finetune"]
    assert row["PGD sampled nodules"]["mean"] < row["Randomly sampled nodules"]["mean"]


def test_attacks_move_the_attacked_model(result):
    res, _, _ = result
    t5, t6 = res["table5"]["baseline-beta-finetune"], res["table6"]["baseline-beta-finetune"]
    assert t5["Adv."]["mean"] < t5["0.0 uniform noise"]["mean"]
    assert t6["PGD negative patches"]["mean"] > t6["Negative patches"]["mean"]
    assert t6["PGD noise"]["mean"] > t6["Uniform noise"]["mean"]


def test_figures_written(tmp_path_factory, result):
    config, workdir, gen, scans = shared_setup(tmp_path_factory)
    out = str(tmp_path_factory.mktemp("figs"))
    paths = figures.make_figures(result[2], workdir, scans, out, generator=gen, n=4)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["fig5_synthetic_pgd.png", "fig6_perturbations.png",
                     "fig8_real_vs_synthetic.png", "fig9_noise_levels.png"]
    import matplotlib.image as mpimg

    for p in paths:
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and np.std(img) > 0.01


def test_attack_cli_help():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "attack.py", "--help"], cwd=root, capture_output=True,
                       text=True, encoding="utf-8", errors="replace", timeout=120)
    assert r.returncode in (0, 1), r.stderr  # absl exits 1 after printing --help
    for flag in ("--mode", "--models", "--workdir", "--config"):
        assert flag in r.stdout + r.stderr
