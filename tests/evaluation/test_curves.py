"""evaluation/curves.py: robustness curves (mean FPR score vs image-PGD radius) under the
transfer and white-box protocols, with the tiny config's real DenseUNet FPRs (random initial
weights; ``tiny_fpr`` in ``tests/evaluation/conftest.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.adversarial.attacks import score_patches
from nodulejax.evaluation import curves
from nodulejax.models.classifier import FPRHandle
from nodulejax.runtime.keys import item_keys


@pytest.fixture(scope="module")
def curve_run(tiny_fpr):
    config, target, x = tiny_fpr
    p = x.shape[1]
    other_vars = jax.jit(lambda k: target.model.init(k, jnp.zeros((1, p, p, p, 1)), task="cls"))(
        jax.random.key(1, impl="rbg"))
    other = FPRHandle(target.model, {"params": other_vars["params"]}, "beta", "fpr_other")
    n = int(config.stress.curve_patches)
    uniform = np.random.default_rng(1).uniform(0, 1, (n, p, p, p)).astype(np.float32)
    inp = {"positives": x, "uniform_patches": uniform,
           "noise_keys": item_keys(0, 11, np.arange(n))}
    scores = {}
    out = curves.robustness_curves(config, {"fpr_target": target, "fpr_other": other}, target,
                                   "fpr_target", inp, scores)
    return config, target, other, inp, out, scores


def test_curves_have_one_mean_per_radius_model_kind_and_protocol(curve_run):
    config, _, _, _, out, scores = curve_run
    eps = [float(e) for e in config.stress.curve_eps]
    n = int(config.stress.curve_patches)
    assert out["eps"] == eps and out["n_positives"] == n and out["attacked"] == "fpr_target"
    for kind in ("positives", "noise"):
        for proto in ("transfer", "whitebox"):
            assert set(out[kind][proto]) == {"target", "other"}
            for model, means in out[kind][proto].items():
                assert len(means) == len(eps)
                for e, m in zip(eps, means, strict=True):
                    p = scores[f"curve_{kind}_{proto}/{model}/eps={e:g}"]
                    assert p.shape == (n,) and m == pytest.approx(float(p.mean()))


def test_radius_zero_is_the_clean_score_and_the_target_is_its_own_white_box(curve_run):
    config, target, other, inp, out, _ = curve_run
    n = int(config.stress.curve_patches)
    bs = int(config.pgd.batch_size)
    for name, m in (("target", target), ("other", other)):
        clean = float(score_patches(m, inp["positives"][:n], bs).mean())
        noise = float(score_patches(m, inp["uniform_patches"], bs).mean())
        for proto in ("transfer", "whitebox"):
            assert out["positives"][proto][name][0] == pytest.approx(clean, abs=1e-6)
            assert out["noise"][proto][name][0] == pytest.approx(noise, abs=1e-6)
    for kind in ("positives", "noise"):
        assert out[kind]["transfer"]["target"] == out[kind]["whitebox"]["target"]


def test_white_box_attacks_move_each_model_the_way_they_push(curve_run):
    _, _, _, _, out, _ = curve_run
    for name in ("target", "other"):
        pos, noise = out["positives"]["whitebox"][name], out["noise"]["whitebox"][name]
        assert pos[-1] < pos[0]  # hiding the nodule lowers the score
        assert noise[-1] > noise[0]  # pushing noise to fire raises it


def test_plot_curves_writes_a_png(curve_run, tmp_path):
    out = curve_run[4]
    path = tmp_path / "curves.png"
    curves.plot_curves(out, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_no_radii_no_curves(tiny_fpr):
    config, target, x = tiny_fpr
    c = config.copy_and_resolve_references()
    c.stress.curve_eps = ()
    assert curves.robustness_curves(c, {"fpr_target": target}, target, "fpr_target", {}) == {}
