"""nodulejax.evaluation.stress (Tables 4-6), nodulejax.evaluation.figures (Figs. 5, 6, 8, 9)
and attack.py's CLI, on the session fixture pool_setup (tests/conftest.py: tiny
phantom, briefly trained DenseUNet3D FPR saved through the real checkpoint code, blob
generator)."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from nodulejax.adversarial.attacks import score_patches
from nodulejax.errors import ConfigError
from nodulejax.evaluation import figures, stress
from nodulejax.models.classifier import load_fpr
from nodulejax.runtime import checkpoint

pytestmark = pytest.mark.slow  # the pool set-up plus a stress run: ~70 s on 2 cores

MODELS = ["baseline-beta-finetune", "fpr_beta+syn"]
REPLICA = "fpr_beta+syn.s1"


@pytest.fixture(scope="module")
def result(tmp_path_factory, pool_setup):
    config, workdir, gen, scans = pool_setup
    c = config.copy_and_resolve_references()
    c.pgd.latent_steps = 10  # traced: no recompilation
    c.pgd.image_steps = 5
    c.stress.negatives_per_scan = 2
    c.stress.curve_eps = (0.0, 0.03, 0.15)
    c.stress.curve_patches = 4
    c.stress.whitebox_patches = 3  # white-box on the first 3 of each kind
    out = str(tmp_path_factory.mktemp("stress"))
    # a seed replica of beta+syn (its weights * 0.99): scored on the transfer inputs only
    params = load_fpr(c, workdir, "fpr_beta+syn").variables["params"]
    with checkpoint.ModelCheckpoints(checkpoint.model_dir(workdir, REPLICA), config=c,
                                     async_save=False) as m:
        m.save(1, {"params": jax.tree.map(lambda a: a * 0.99, params)})
    t0 = time.time()
    res = stress.run_stress(c, workdir, scans, MODELS, out, generator=gen, replicas=[REPLICA])
    print(f"\nrun_stress: {time.time() - t0:.1f} s", flush=True)
    return res, out, c


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
    cols["table5_whitebox"] = stress.ADVERSARIAL["table5"]
    cols["table6_whitebox"] = stress.ADVERSARIAL["table6"]
    for table, names in cols.items():
        replica = set() if table.endswith("_whitebox") else {"beta+syn.s1"}  # transfer only
        assert set(on_disk[table]) == {"baseline-beta-finetune", "beta+syn"} | replica
        base = table.replace("_whitebox", "")
        for model, row in on_disk[table].items():
            assert f"| {model} |" in md
            for col in names:
                st = row[col]
                assert st["n"] > 0, (table, model, col)
                assert 0.0 <= st["mean"] <= 1.0 and 0.0 <= st["std"] <= 0.5
                assert f"{st['mean']:.2f} ± {st['std']:.2f}" in md
                if col in stress.ADVERSARIAL[base]:  # every adversarial cell names its target
                    want = "self" if table.endswith("_whitebox") else \
                        "fpr_baseline-beta-finetune"
                    assert st["attacked"] == want, (table, model, col)
                else:
                    assert "attacked" not in st
    s = on_disk["settings"]
    assert s["num_negatives"] == 2 * 4 and s["num_noise"] == s["num_negatives"]
    assert on_disk["table5"]["beta+syn"]["Adv."]["n"] == s["num_positives"]
    assert "Attacked model per adversarial column: PGD sampled nodules: " \
           "fpr_baseline-beta-finetune" in md
    assert "PGD noise: each model itself" in md and "white-box" in md


def test_scores_npz_aligned_by_patch(result):
    res, out, c = result
    with np.load(os.path.join(out, "scores.npz")) as z:
        scores = {k: z[k] for k in z.files}
    for table in ("table4", "table5", "table6", "table5_whitebox", "table6_whitebox"):
        for model, row in res[table].items():
            for col, st in row.items():
                p = scores[f"{table}/{model}/{col}"]
                assert p.shape == (st["n"],)
                np.testing.assert_allclose(p.mean(), st["mean"], rtol=1e-9)
                other = "beta+syn" if model != "beta+syn" else "baseline-beta-finetune"
                assert scores[f"{table}/{other}/{col}"].shape == p.shape


def test_transfer_inputs_do_not_depend_on_the_scored_model(result, pool_setup):
    """Transfer cells of beta+syn = beta+syn's scores on the patches attacked against the
    target; white-box cells = its scores on its own attacks (the same start keys)."""
    res, out, c = result
    config, workdir, gen, scans = pool_setup
    target = load_fpr(c, workdir, "fpr_baseline-beta-finetune")
    other = load_fpr(c, workdir, "fpr_beta+syn")
    inp = stress.stress_inputs(c, scans, target, None)
    own = stress.adversarial_inputs(c, other, inp)
    with np.load(os.path.join(out, "scores.npz")) as z:
        bs = int(c.pgd.batch_size)
        for key, col in (("pos_adv", "table5/{}/Adv."), ("noise_adv", "table6/{}/PGD noise"),
                         ("neg_adv", "table6/{}/PGD negative patches")):
            transfer = z[col.format("beta+syn")]
            np.testing.assert_allclose(transfer, score_patches(other, inp[key], bs),
                                       atol=1e-6)
            # white-box: the first whitebox_patches of each kind, each patch attacked from
            # the key it has in the full set (the attack of patch i is per example)
            n = int(c.stress.whitebox_patches)
            white = z[col.replace("/", "_whitebox/", 1).format("beta+syn")]
            assert len(white) == min(n, len(inp[key]))
            np.testing.assert_allclose(white, score_patches(other, own[key][:n], bs),
                                       atol=1e-6)
            assert not np.array_equal(inp[key], own[key]), key  # each model attacked itself
            # the target attacking itself is the transfer attack
            np.testing.assert_array_equal(
                z[col.format("baseline-beta-finetune")][:n],
                z[col.replace("/", "_whitebox/", 1).format("baseline-beta-finetune")])


def test_robustness_curves(result):
    res, out, c = result
    cur = res["curves"]
    assert cur["eps"] == [float(e) for e in c.stress.curve_eps]
    assert cur["attacked"] == "fpr_baseline-beta-finetune"
    for kind in ("positives", "noise"):
        for proto in ("transfer", "whitebox"):
            for model in ("baseline-beta-finetune", "beta+syn"):
                m = cur[kind][proto][model]
                assert len(m) == len(cur["eps"]) and all(0.0 <= v <= 1.0 for v in m)
        assert cur[kind]["transfer"]["baseline-beta-finetune"] == \
            cur[kind]["whitebox"]["baseline-beta-finetune"]
        # eps 0 is the unattacked set: the same for both protocols
        assert cur[kind]["transfer"]["beta+syn"][0] == cur[kind]["whitebox"]["beta+syn"][0]
    pos = cur["positives"]["whitebox"]["baseline-beta-finetune"]
    noi = cur["noise"]["whitebox"]["baseline-beta-finetune"]
    assert pos[-1] < pos[0] and noi[-1] > noi[0]  # the largest radius moves the score
    import matplotlib.image as mpimg

    img = mpimg.imread(os.path.join(out, "robustness_curves.png"))
    assert img.ndim == 3 and np.std(img) > 0.01


def test_table4_pgd_nodules_get_lower_confidence(result):
    res, _, _ = result
    row = res["table4"]["baseline-beta-finetune"]
    assert row["PGD sampled nodules"]["mean"] < row["Randomly sampled nodules"]["mean"]


def test_attacks_move_the_attacked_model(result):
    """Attack -> stress scores: the attacked model scores every perturbed positive below its
    clean patch and every PGD negative patch above its negative (same index, scores.npz)."""
    res, out, _ = result
    t5, t6 = res["table5"]["baseline-beta-finetune"], res["table6"]["baseline-beta-finetune"]
    assert t5["Adv."]["mean"] < t5["0.0 uniform noise"]["mean"]
    assert t6["PGD negative patches"]["mean"] > t6["Negative patches"]["mean"]
    assert t6["PGD noise"]["mean"] > t6["Uniform noise"]["mean"]
    with np.load(os.path.join(out, "scores.npz")) as z:
        b = "baseline-beta-finetune"
        assert np.all(z[f"table5/{b}/Adv."] < z[f"table5/{b}/0.0 uniform noise"])
        assert np.all(z[f"table6/{b}/PGD negative patches"] > z[f"table6/{b}/Negative patches"])


def test_seed_replicas_are_scored_on_the_same_transfer_inputs(result, pool_setup):
    res, out, c = result
    config, workdir, gen, scans = pool_setup
    target = load_fpr(c, workdir, "fpr_baseline-beta-finetune")
    rep = load_fpr(c, workdir, REPLICA)
    inp = stress.stress_inputs(c, scans, target, None)
    assert res["settings"]["replicas"] == ["beta+syn.s1"]
    with np.load(os.path.join(out, "scores.npz")) as z:
        for key, col in (("pos_adv", "table5/{}/Adv."), ("noise_adv", "table6/{}/PGD noise")):
            np.testing.assert_allclose(z[col.format("beta+syn.s1")],
                                       score_patches(rep, inp[key], int(c.pgd.batch_size)),
                                       atol=1e-6)
        assert not [k for k in z.files if "whitebox/beta+syn.s1" in k]


def test_figures_written(tmp_path_factory, result, pool_setup):
    config, workdir, gen, scans = pool_setup
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


def test_a_negative_whitebox_cap_is_refused_before_any_attack(result, tmp_path):
    _, _, c = result
    bad = c.copy_and_resolve_references()
    bad.stress.whitebox_patches = -1
    with pytest.raises(ConfigError, match="config.stress.whitebox_patches"):
        stress.run_stress(bad, str(tmp_path), [], MODELS, str(tmp_path / "out"))
