"""Paired bootstrap (nodulejax.evaluation.bootstrap): the vectorised paired FROC and patch
resampling equal a naive loop over the same resampled scans / patches, pairing narrows the
interval of a correlated difference, bad input is refused, scores.npz is read back, and the
demo-sized case (9 models, 1000 resamples) is timed."""

import time

import numpy as np
import pytest

from nodulejax.data.luna16 import Annotations, Predictions
from nodulejax.errors import ResultsError
from nodulejax.evaluation import bootstrap, froc


def _ann(rows):
    u, x, y, z, d = zip(*rows, strict=True)
    return Annotations(np.array(u), np.stack([x, y, z], 1).astype(float), np.array(d, float))


def _pred(rows):
    u, x, y, z, p = zip(*rows, strict=True)
    return Predictions(np.array(u), np.stack([x, y, z], 1).astype(float), np.array(p, float))


def _models(n_scans, n_models, seed, fp_per_scan=6):
    """Entries of ``n_models`` models on the same scans and annotations (coarse probability
    grid: ties between TPs and FPs and across models)."""
    rng = np.random.default_rng(seed)
    uids = [f"s{i}" for i in range(n_scans)]
    a = _ann([(u, 0, 0, 100 * k, 6) for u in uids for k in range(rng.integers(0, 3))]
             + [(uids[0], 0, 0, 900, 6)])
    empty = Annotations(np.zeros(0, str), np.zeros((0, 3)), np.zeros(0))
    out = {}
    for m in range(n_models):
        marks = [(a.seriesuid[i], *a.xyz[i], rng.integers(1, 20) / 20) for i in range(len(a))
                 if rng.random() < 0.6 + 0.04 * m]
        marks += [(u, 500, 0, 0, rng.integers(0, 20) / 20) for u in uids
                  for _ in range(rng.integers(0, 2 * fp_per_scan))]
        out[f"m{m}"] = froc.match_marks(a, empty, uids, _pred(marks))
    return out


def _resampled(entries, row):
    """The entries of the scans ``row`` (drawn indices), scan k of the resample = row[k]."""
    sc, s, t = [], [], []
    for k, scan in enumerate(row):
        m = entries.scan == scan
        sc.append(np.full(m.sum(), k))
        s.append(entries.score[m])
        t.append(entries.is_tp[m])
    return froc.FrocEntries(np.concatenate(sc), np.concatenate(s), np.concatenate(t),
                            entries.nodules_per_scan[row])


def test_paired_froc_equals_a_naive_loop_over_the_same_resampled_scans():
    ents = _models(20, 3, seed=1)
    draws = bootstrap.scan_draws(20, 30, seed=(5, 301))
    fast = bootstrap.paired_froc(ents, froc.FPS, 30, seed=(5, 301))
    for name, e in ents.items():
        slow = []
        for row in draws:
            f, s, _ = froc.froc_curve(_resampled(e, row))
            slow.append(froc.sensitivity_at(f, s, froc.FPS))
        np.testing.assert_allclose(fast[name], np.array(slow), atol=1e-12)
    # the CPM difference of a resample is the difference of the two models on the same scans
    d = fast["m2"].mean(1) - fast["m0"].mean(1)
    assert d.std() > 0 and np.isfinite(d).all()


def test_paired_means_and_independent_means_equal_naive_loops():
    rng = np.random.default_rng(2)
    a, b = rng.random(37), rng.random(37)
    fast = bootstrap.paired_means({"a": a, "b": b}, 50, seed=(3, 302))
    draws = bootstrap.patch_draws(37, 50, seed=(3, 302))
    np.testing.assert_allclose(fast["a"], [a[i].mean() for i in draws], atol=1e-12)
    np.testing.assert_allclose(fast["b"], [b[i].mean() for i in draws], atol=1e-12)
    c = rng.random(11)
    ma, mc = bootstrap.independent_means(a, c, 40, seed=9)
    g = np.random.default_rng(9)
    ia, ic = g.integers(0, 37, (40, 37)), g.integers(0, 11, (40, 11))
    np.testing.assert_allclose(ma, a[ia].mean(1), atol=1e-12)
    np.testing.assert_allclose(mc, c[ic].mean(1), atol=1e-12)


def test_pairing_narrows_the_interval_of_a_correlated_difference():
    rng = np.random.default_rng(4)
    base = rng.random(400)
    better = np.clip(base + 0.03 + 0.01 * rng.standard_normal(400), 0, 1)
    p = bootstrap.paired_means({"a": better, "b": base}, 500, seed=0)
    lo, hi = bootstrap.interval(p["a"] - p["b"])
    ia, ib = bootstrap.independent_means(better, base, 500, seed=0)
    ulo, uhi = bootstrap.interval(ia - ib)
    assert 0 < lo < 0.03 < hi and hi - lo < 0.2 * (uhi - ulo)


def test_bad_input_is_refused():
    ents = _models(10, 1, seed=3)
    other = _models(12, 1, seed=3)
    with pytest.raises(ResultsError, match="different scans"):
        bootstrap.paired_froc({"a": ents["m0"], "b": other["m0"]}, froc.FPS, 5, seed=0)
    with pytest.raises(ResultsError, match="not aligned"):
        bootstrap.paired_means({"a": np.zeros(3), "b": np.zeros(4)}, 5, seed=0)


def test_read_scores_round_trip_and_refusals(tmp_path):
    good = tmp_path / "scores.npz"
    arrs = {"table6/baseline-beta-finetune/PGD noise": np.linspace(0, 1, 5),
            "table4/beta+syn (random)/Randomly sampled nodules": np.array([0.5, 0.25])}
    bootstrap.write_scores(good, {tuple(k.split("/")): v for k, v in arrs.items()})
    got = bootstrap.read_scores(good)
    assert set(got) == {("table6", "baseline-beta-finetune", "PGD noise"),
                        ("table4", "beta+syn (random)", "Randomly sampled nodules")}
    np.testing.assert_array_equal(got[("table6", "baseline-beta-finetune", "PGD noise")],
                                  arrs["table6/baseline-beta-finetune/PGD noise"])
    with pytest.raises(ResultsError, match="without '/'"):
        bootstrap.write_scores(tmp_path / "x.npz", {("table6", "a/b", "PGD noise"): [0.1]})
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"table6/PGD noise": np.zeros(3)})
    with pytest.raises(ResultsError, match=r"bad\.npz.*table6/PGD noise"):
        bootstrap.read_scores(bad)
    np.savez(bad, **{"table6/m/PGD noise": np.zeros((3, 2))})
    with pytest.raises(ResultsError, match="1-D finite"):
        bootstrap.read_scores(bad)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ResultsError, match="junk.npz"):
        bootstrap.read_scores(tmp_path / "junk.npz")


def test_demo_sized_paired_froc_is_fast():
    ents = _models(60, 9, seed=5, fp_per_scan=40)
    t0 = time.perf_counter()
    out = bootstrap.paired_froc(ents, froc.FPS, 1000, seed=0)
    dt = time.perf_counter() - t0
    print(f"\npaired FROC bootstrap, 9 models x 1000 resamples x 60 scans: {dt:.2f} s")
    assert all(v.shape == (1000, 7) and np.isfinite(v).all() for v in out.values())
    assert dt < 20.0
