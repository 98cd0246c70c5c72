"""LUNA16-exact FROC/CPM (nodulejax.evaluation.froc): every challenge rule on hand-built
cases with hand-computed expectations, the real LUNA16 annotation files with generated
marks, bad input, the CLI, and the bootstrap (against a naive per-sample loop, and timed)."""

import json
import os
import time

import numpy as np
import pytest

from nodulejax.data.luna16 import Annotations, Predictions, read_annotations, read_seriesuids
from nodulejax.errors import LUNA16FormatError
from nodulejax.evaluation import bootstrap, froc

LUNA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "luna16")
if not os.path.isdir(LUNA):  # the checkout's sibling shared/ (CI) or the workspace copy
    LUNA = "/work/shared/data/luna16"
KEYS = ["0.125", "0.25", "0.5", "1", "2", "4", "8"]


def ann(*rows):
    """rows: (uid, x, y, z, d)."""
    if not rows:
        return Annotations(np.zeros(0, str), np.zeros((0, 3)), np.zeros(0))
    u, x, y, z, d = zip(*rows, strict=True)
    return Annotations(np.array(u), np.stack([x, y, z], 1).astype(float), np.array(d, float))


def pred(*rows):
    """rows: (uid, x, y, z, p)."""
    if not rows:
        return Predictions(np.zeros(0, str), np.zeros((0, 3)), np.zeros(0))
    u, x, y, z, p = zip(*rows, strict=True)
    return Predictions(np.array(u), np.stack([x, y, z], 1).astype(float), np.array(p, float))


def ev(a, p, uids, e=None, **kw):
    kw.setdefault("bootstrap", 0)
    return froc.evaluate(a, e if e is not None else ann(), uids, p, **kw)


def sens_list(r):
    return [r["sensitivity_at"][k] for k in KEYS]


# ---------------------------------------------------------------------------------------
# Hand-built rules
# ---------------------------------------------------------------------------------------


def test_interpolation_and_ties_by_hand():
    # 4 scans, 4 nodules (100 mm apart); TPs at 0.9, 0.6; FPs at 0.8, 0.7.
    # Curve: (0,0) (0,1/4)@.9 (1/4,1/4)@.8 (1/2,1/4)@.7 (1/2,1/2)@.6.
    uids = ["a", "b", "c", "d"]
    a = ann(*[(u, 0, 0, 0, 6) for u in uids])
    p = pred(("a", 0, 0, 0, 0.9), ("b", 1, 0, 0, 0.6), ("c", 50, 0, 0, 0.8), ("d", 50, 0, 0, 0.7))
    r = ev(a, p, uids)
    assert sens_list(r) == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert r["cpm"] == pytest.approx(3 / 7)
    assert (r["n_nodules"], r["n_detected"], r["n_fp_marks"], r["n_scans"]) == (4, 2, 2, 4)
    assert r["cpm_ci"] is None


def test_curve_records_the_threshold_of_each_point():
    """froc.json's curve.thresholds: point i counts the marks with probability >= it (the
    origin: None), so a detector's operating point at 1 FP/scan can be read back."""
    uids = ["a", "b", "c", "d"]
    a = ann(*[(u, 0, 0, 0, 6) for u in uids])
    p = pred(("a", 0, 0, 0, 0.9), ("b", 1, 0, 0, 0.6), ("c", 50, 0, 0, 0.8), ("d", 50, 0, 0, 0.7))
    r = ev(a, p, uids)
    assert r["curve"]["thresholds"] == [None, 0.9, 0.8, 0.7, 0.6]
    assert r["curve"]["fps"] == pytest.approx([0, 0, 0.25, 0.5, 0.5])
    json.dumps(r, allow_nan=False)  # plain JSON


def test_curve_starts_at_origin_and_interpolates_linearly():
    # one TP and one FP tied at 0.5 over 4 scans: curve (0,0) -> (1/4, 1); at 1/8 -> 1/2.
    uids = ["a", "b", "c", "d"]
    p = pred(("a", 0, 0, 0, 0.5), ("a", 40, 0, 0, 0.5))
    r = ev(ann(("a", 0, 0, 0, 5)), p, uids)
    assert sens_list(r) == pytest.approx([0.5, 1, 1, 1, 1, 1, 1])


def test_hit_radius_strict_and_negative_diameter_means_10mm():
    uids = ["a"]
    # d = 6: hit iff distance < 3 (strict)
    assert ev(ann(("a", 0, 0, 0, 6)), pred(("a", 2.99, 0, 0, 1)), uids)["n_detected"] == 1
    r = ev(ann(("a", 0, 0, 0, 6)), pred(("a", 3.0, 0, 0, 1)), uids)
    assert (r["n_detected"], r["n_fp_marks"]) == (0, 1)
    # d < 0: 10 mm, i.e. radius 5 (for an included and for an excluded finding)
    r = ev(ann(("a", 0, 0, 0, -1)), pred(("a", 0, 4.9, 0, 1), ("a", 0, 0, 5.0, 1)), uids)
    assert (r["n_detected"], r["n_fp_marks"]) == (1, 1)
    r = ev(ann(), pred(("a", 0, 4.9, 0, 1), ("a", 0, 0, 5.0, 1)), uids, e=ann(("a", 0, 0, 0, -1)))
    assert (r["n_detected"], r["n_fp_marks"], r["n_marks_on_excluded"]) == (0, 1, 1)


def test_double_marks_only_the_most_probable_counts():
    # nodule in scan a hit by marks 0.3 and 0.9 (0.3 dropped, not an FP); FP at 0.6.
    # 2 scans: curve (0,0) (0,1)@.9 (1/2,1)@.6 -> sensitivity 1 everywhere.
    uids = ["a", "b"]
    p = pred(("a", 1, 0, 0, 0.3), ("a", 0, 1, 0, 0.9), ("a", 60, 0, 0, 0.6))
    r = ev(ann(("a", 0, 0, 0, 8)), p, uids)
    assert (r["n_detected"], r["n_fp_marks"]) == (1, 1)
    assert sens_list(r) == pytest.approx([1] * 7)
    # the nodule's score is its best mark's: with the FP above it, 1/8 interpolates
    p = pred(("a", 1, 0, 0, 0.3), ("a", 0, 1, 0, 0.5), ("a", 60, 0, 0, 0.6))
    r = ev(ann(("a", 0, 0, 0, 8)), p, uids)  # (0,0) (1/2,0)@.6 (1/2,1)@.5
    assert sens_list(r) == pytest.approx([0, 0, 1, 1, 1, 1, 1])


def test_mark_on_excluded_finding_is_neither_tp_nor_fp():
    uids = ["a"]
    e = ann(("a", 30, 0, 0, 4))
    p = pred(("a", 30, 1, 0, 0.95), ("a", 0, 0, 0, 0.5))
    r = ev(ann(("a", 0, 0, 0, 5)), p, uids, e=e)
    assert (r["n_detected"], r["n_fp_marks"], r["n_marks_on_excluded"]) == (1, 0, 1)
    # without the excluded file it is an FP above the TP: (0,0) (1,0)@.95 (1,1)@.5
    r = ev(ann(("a", 0, 0, 0, 5)), p, uids)
    assert r["n_fp_marks"] == 1
    assert sens_list(r) == pytest.approx([0, 0, 0, 1, 1, 1, 1])
    # a mark on both an excluded finding and an included nodule is a TP
    e2 = ann(("a", 0.5, 0, 0, 4))
    r = ev(ann(("a", 0, 0, 0, 5)), pred(("a", 0, 0, 0, 0.5)), uids, e=e2)
    assert (r["n_detected"], r["n_fp_marks"]) == (1, 0)


def test_min_diameter_moves_small_nodules_to_the_irrelevant_set():
    """Section 4: only nodules >= 6 mm are benchmarked; a hit on a smaller included nodule is
    neither TP nor FP (as a hit on annotations_excluded.csv), and it leaves the denominator."""
    uids = ["a", "b"]
    a = ann(("a", 0, 0, 0, 8), ("a", 40, 0, 0, 4), ("b", 0, 0, 0, 5.9), ("b", 60, 0, 0, 6))
    p = pred(("a", 0, 1, 0, 0.9), ("a", 40, 1, 0, 0.8), ("b", 0, 0, 1, 0.7),
             ("a", 90, 0, 0, 0.6))
    r = ev(a, p, uids)  # all four count: 3 TPs, 1 FP, 4 nodules
    assert (r["n_nodules"], r["n_detected"], r["n_fp_marks"]) == (4, 3, 1)
    r6 = ev(a, p, uids, min_diameter_mm=6.0)  # 4 and 5.9 mm -> irrelevant
    assert (r6["n_nodules"], r6["n_detected"], r6["n_fp_marks"]) == (2, 1, 1)
    assert r6["n_marks_on_excluded"] == 2 and r6["min_diameter_mm"] == 6.0
    # the same as listing them in the excluded file with their diameters
    e = ann(("a", 40, 0, 0, 4), ("b", 0, 0, 0, 5.9))
    big = ann(("a", 0, 0, 0, 8), ("b", 60, 0, 0, 6))
    r_e = ev(big, p, uids, e=e)
    assert r_e["cpm"] == r6["cpm"] and r_e["n_marks_on_excluded"] == 2
    # a moved nodule keeps its own hit radius (4 mm -> 2 mm): a mark 3 mm away is an FP
    r = ev(a, pred(("a", 43, 0, 0, 0.5)), uids, min_diameter_mm=6.0)
    assert (r["n_fp_marks"], r["n_marks_on_excluded"]) == (1, 0)
    assert ev(a, p, uids, min_diameter_mm=0.0)["n_nodules"] == 4


def test_one_mark_detects_two_nodules():
    a = ann(("a", 0, 0, 0, 10), ("a", 4, 0, 0, 10), ("a", 100, 0, 0, 10))
    r = ev(a, pred(("a", 2, 0, 0, 0.7)), ["a"])
    assert (r["n_nodules"], r["n_detected"], r["n_fp_marks"]) == (3, 2, 0)
    assert r["cpm"] == pytest.approx(2 / 3)


def test_scans_without_marks_count_and_missed_nodules_stay():
    # scan b has a nodule and no mark; scan c nothing. FP/scan is over 3 scans.
    a = ann(("a", 0, 0, 0, 5), ("b", 0, 0, 0, 5))
    p = pred(("a", 0, 0, 0, 0.4), *[("a", 50 + 10 * i, 0, 0, 0.9) for i in range(3)])
    r = ev(a, p, ["a", "b", "c"])  # (0,0) (1,0)@.9 (1,1/2)@.4
    assert sens_list(r) == pytest.approx([0, 0, 0, 0.5, 0.5, 0.5, 0.5])
    r1 = ev(a, p, ["a", "b"])  # 3 FPs over 2 scans: (0,0) (1.5,0) (1.5,1/2) -> 1 FP/scan: 0
    assert r1["sensitivity_at"]["1"] == 0 and r1["sensitivity_at"]["2"] == 0.5
    # annotations of scans that are not listed are ignored (as the official script)
    assert ev(a, pred(("a", 0, 0, 0, 0.4)), ["a"])["n_nodules"] == 1


def test_no_false_positive_run_gives_final_sensitivity_everywhere():
    # official border case: every curve point gets FPs/scan 0 -> np.interp returns the last
    # sensitivity (detected / all) at every FP rate.
    a = ann(("a", 0, 0, 0, 5), ("a", 40, 0, 0, 5), ("b", 0, 0, 0, 5), ("b", 40, 0, 0, 5))
    p = pred(("a", 0, 0, 0, 0.2), ("b", 40, 0, 0, 0.9), ("b", 0, 0, 0, 0.1))
    r = ev(a, p, ["a", "b"], bootstrap=30)
    assert r["n_fp_marks"] == 0
    assert sens_list(r) == pytest.approx([0.75] * 7)
    assert r["cpm"] == pytest.approx(0.75)
    assert all(0 <= lo <= hi <= 1 for lo, hi in r["sensitivity_ci"].values())


def test_empty_predictions_give_cpm_zero():
    r = ev(ann(("a", 0, 0, 0, 5)), pred(), ["a", "b"], bootstrap=20)
    assert r["cpm"] == 0 and r["n_detected"] == 0 and r["cpm_ci"] == [0, 0]


def test_mark_cap_keeps_strictly_above_the_101st_probability():
    a = ann(("a", 0, 0, 0, 5))
    fps = [("a", 100 + 10 * i, 0, 0, 0.9 + i * 1e-4) for i in range(98)]
    # 98 FPs + FP and TP tied at 0.5 = 100 marks: no cap, the nodule is detected
    p100 = pred(*fps, ("a", 50, 50, 50, 0.5), ("a", 0, 0, 0, 0.5))
    r = ev(a, p100, ["a"])
    assert (r["n_marks"], r["n_detected"], r["n_fp_marks"]) == (100, 1, 99)
    # one more mark tied at 0.5: 101st-highest = 0.5 -> all three 0.5 marks dropped
    p101 = pred(*fps, ("a", 50, 50, 50, 0.5), ("a", 0, 0, 0, 0.5), ("a", 60, 50, 50, 0.5))
    r = ev(a, p101, ["a"])
    assert (r["n_marks"], r["n_marks_capped"], r["n_detected"], r["n_fp_marks"]) == (98, 3, 0, 98)
    # 101 marks, the nodule mark above the 101st: kept; the lowest (0.1) dropped
    p = pred(*fps, ("a", 0, 0, 0, 0.95), ("a", 50, 50, 50, 0.3), ("a", 60, 0, 0, 0.1))
    r = ev(a, p, ["a"])
    assert (r["n_marks"], r["n_detected"], r["n_fp_marks"]) == (100, 1, 99)
    # max_marks=0 disables the cap
    assert ev(a, p101, ["a"], max_marks=0)["n_marks"] == 101


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_bad_arrays_are_refused():
    a = ann(("a", 0, 0, 0, 5))
    with pytest.raises(LUNA16FormatError, match=r"row 1.*'zz'.*not in the seriesuids"):
        ev(a, pred(("a", 0, 0, 0, 0.5), ("zz", 0, 0, 0, 0.5)), ["a"])
    with pytest.raises(LUNA16FormatError, match="row 0.*non-finite"):
        ev(a, pred(("a", 0, 0, 0, np.nan)), ["a"])
    with pytest.raises(LUNA16FormatError, match="non-finite"):
        ev(a, pred(("a", 0, np.nan, 0, 0.5)), ["a"])
    with pytest.raises(LUNA16FormatError, match="line 3: duplicated scan 'a'"):
        ev(a, pred(), ["a", "b", "a"])


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_bad_files_name_file_and_line(tmp_path):
    annp = _write(tmp_path / "ann.csv", "seriesuid,coordX,coordY,coordZ,diameter_mm\na,0,0,0,5\n")
    uids = _write(tmp_path / "uids.csv", "a\nb\n")
    hdr = "seriesuid,coordX,coordY,coordZ,probability\n"
    bad = _write(tmp_path / "p1.csv", hdr + "a,0,0,0,0.5\nq,0,0,0,0.5\n")
    with pytest.raises(LUNA16FormatError, match=r"p1.csv: line 3.*'q'"):
        froc.evaluate_files(annp, None, uids, bad, bootstrap=0)
    nanp = _write(tmp_path / "p2.csv", hdr + "a,0,0,0,0.5\na,0,0,0,nan\n")
    with pytest.raises(LUNA16FormatError, match=r"p2.csv: line 3"):
        froc.evaluate_files(annp, None, uids, nanp, bootstrap=0)
    nanx = _write(tmp_path / "p3.csv", hdr + "b,nan,0,0,0.5\n")
    with pytest.raises(LUNA16FormatError, match=r"p3.csv: line 2"):
        froc.evaluate_files(annp, None, uids, nanx, bootstrap=0)
    dup = _write(tmp_path / "dup.csv", "a\nb\na\n")
    with pytest.raises(LUNA16FormatError, match=r"dup.csv: line 3"):
        froc.evaluate_files(annp, None, dup, _write(tmp_path / "e.csv", hdr), bootstrap=0)
    nocol = _write(tmp_path / "p4.csv", "seriesuid,coordX,coordY,coordZ\na,0,0,0\n")
    with pytest.raises(LUNA16FormatError, match=r"p4.csv.*probability"):
        froc.evaluate_files(annp, None, uids, nocol, bootstrap=0)
    # header-only predictions: valid, CPM 0
    r = froc.evaluate_files(annp, None, uids, _write(tmp_path / "e.csv", hdr), bootstrap=0)
    assert r["cpm"] == 0 and r["n_scans"] == 2 and r["n_nodules"] == 1


# ---------------------------------------------------------------------------------------
# Real LUNA16 annotation files with generated marks
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def luna():
    if not os.path.exists(os.path.join(LUNA, "annotations.csv")):
        pytest.skip("LUNA16 CSVs not present")
    return (
        read_annotations(os.path.join(LUNA, "annotations.csv")),
        read_annotations(os.path.join(LUNA, "annotations_excluded.csv")),
        read_seriesuids(os.path.join(LUNA, "seriesuids.csv")),
    )


def _random_marks(uids, per_scan, rng, pmax=0.9):
    u = np.repeat(np.asarray(uids), per_scan)
    return u, rng.uniform(-300, 300, (len(u), 3)), rng.uniform(0, pmax, len(u))


def test_real_luna16_perfect_marks_plus_random_fps(luna):
    a, e, uids = luna
    rng = np.random.default_rng(1)
    u, xyz, p = _random_marks(uids, 20, rng)
    pr = Predictions(np.r_[a.seriesuid, u], np.r_[a.xyz, xyz], np.r_[np.ones(len(a)), p])
    r = froc.evaluate(a, e, uids, pr, bootstrap=0)
    assert r["n_scans"] == 888 and r["n_nodules"] == len(a) == 1186
    assert r["n_detected"] == 1186
    assert r["cpm"] == pytest.approx(1.0)
    assert r["n_fp_marks"] <= 20 * 888 and r["n_fp_marks"] > 0.9 * 20 * 888


def test_real_luna16_jittered_marks(luna):
    a, e, uids = luna
    rng = np.random.default_rng(2)
    n = len(a)
    direc = rng.normal(size=(n, 3))
    direc /= np.linalg.norm(direc, axis=1, keepdims=True)
    inside = rng.random(n) < 0.6
    rad = a.diameter_mm / 2
    dist = np.where(inside, 0.95, 1.05) * rad  # just inside / just outside the hit radius
    pr = Predictions(a.seriesuid, a.xyz + direc * dist[:, None], np.full(n, 0.99))
    r = froc.evaluate(a, e, uids, pr, bootstrap=0)
    # an outside mark can still land on a neighbouring annotation; nothing else is detected
    assert inside.sum() <= r["n_detected"] <= inside.sum() + 0.02 * n
    # all marks tied at 0.99: the curve is the origin and one point (f1, s1); interpolation
    # from the origin gives s1 * min(x / f1, 1)
    f1, s1 = r["n_fp_marks"] / 888, r["n_detected"] / n
    expect = [s1 * min(x / f1, 1.0) for x in froc.FPS]
    assert sens_list(r) == pytest.approx(expect)
    assert r["cpm"] == pytest.approx(np.mean(expect))
    sub = uids[:100]  # a seriesuids subset: only its scans' annotations count
    keep = np.isin(a.seriesuid, sub)
    pr_sub = Predictions(pr.seriesuid[keep], pr.xyz[keep], pr.probability[keep])
    rs = froc.evaluate(a, e, sub, pr_sub, bootstrap=0)
    assert rs["n_nodules"] == keep.sum() and rs["n_scans"] == 100


# ---------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------


def _naive_bootstrap(entries, targets, n, seed):
    draws = np.random.default_rng(seed).integers(0, entries.n_scans, (n, entries.n_scans))
    out = []
    for row in draws:
        sc, s, t, nod = [], [], [], []
        for k, scan in enumerate(row):
            m = entries.scan == scan
            sc.append(np.full(m.sum(), k))
            s.append(entries.score[m])
            t.append(entries.is_tp[m])
            nod.append(entries.nodules_per_scan[scan])
        ent = froc.FrocEntries(
            np.concatenate(sc), np.concatenate(s), np.concatenate(t), np.array(nod)
        )
        f, se, _ = froc.froc_curve(ent)
        out.append(froc.sensitivity_at(f, se, targets))
    return np.array(out)


@pytest.mark.parametrize("fp_per_scan", [40, 3])
def test_vectorised_bootstrap_matches_naive_resampling(fp_per_scan):
    rng = np.random.default_rng(fp_per_scan)
    s_n = 25
    uids = [f"s{i}" for i in range(s_n)]
    a = ann(*[(u, 0, 0, 100 * k, 6) for u in uids for k in range(rng.integers(0, 4))])
    marks = [(a.seriesuid[i], *a.xyz[i], rng.random()) for i in range(len(a)) if rng.random() < 0.7]
    # probabilities on a coarse grid: many ties between TPs and FPs
    marks += [
        (u, 500, 0, 0, rng.integers(0, 20) / 20)
        for u in uids
        for _ in range(rng.integers(0, 2 * fp_per_scan))
    ]
    ent = froc.match_marks(a, ann(), uids, pred(*marks))
    targets = np.r_[froc.FPS, np.geomspace(0.1, 9, 17)]
    fast = bootstrap.bootstrap_sensitivity(ent, targets, 40, seed=3)
    slow = _naive_bootstrap(ent, targets, 40, seed=3)
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_bootstrap_seeded_and_interval_contains_estimate(luna):
    a, e, uids = luna
    rng = np.random.default_rng(5)
    u, xyz, p = _random_marks(uids, 10, rng)
    keep = rng.random(len(a)) < 0.8
    pr = Predictions(
        np.r_[a.seriesuid[keep], u],
        np.r_[a.xyz[keep], xyz],
        np.r_[rng.uniform(0.3, 1, keep.sum()), p],
    )
    r1 = froc.evaluate(a, e, uids, pr, bootstrap=200, seed=7)
    r2 = froc.evaluate(a, e, uids, pr, bootstrap=200, seed=7)
    r3 = froc.evaluate(a, e, uids, pr, bootstrap=200, seed=8)
    assert r1["cpm_ci"] == r2["cpm_ci"] and r1["cpm_ci"] != r3["cpm_ci"]
    lo, hi = r1["cpm_ci"]
    assert lo < r1["cpm"] < hi and hi - lo < 0.1
    for k in KEYS:
        lo, hi = r1["sensitivity_ci"][k]
        assert lo <= r1["sensitivity_at"][k] + 1e-9 and r1["sensitivity_at"][k] <= hi + 1e-9


def test_bootstrap_speed_1000_samples_888_scans_100_marks():
    rng = np.random.default_rng(0)
    s_n = 888
    uids = [f"1.2.{i}" for i in range(s_n)]
    a = ann(*[(u, 0, 0, 0, 8) for u in uids[::2]])
    u, xyz, p = _random_marks(uids, 100, rng, pmax=1.0)
    xyz[::150] = 0.0  # some marks on the nodules
    ent = froc.match_marks(a, ann(), uids, Predictions(u, xyz, p))
    assert ent.n_marks_kept == 88800
    t0 = time.perf_counter()
    bs = bootstrap.bootstrap_sensitivity(ent, froc.FPS, 1000, seed=0)
    dt = time.perf_counter() - t0
    print(f"\nbootstrap 1000 x 888 scans x 100 marks: {dt:.2f} s")
    assert bs.shape == (1000, 7) and np.isfinite(bs).all()
    assert dt < 30.0


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def test_cli_end_to_end(luna, tmp_path):
    a, _, uids = luna
    rng = np.random.default_rng(4)
    sub = uids[:60]
    keep = np.isin(a.seriesuid, sub)
    lines = ["seriesuid,coordX,coordY,coordZ,probability"]
    for uid, (x, y, z) in zip(a.seriesuid[keep], a.xyz[keep], strict=True):
        lines.append(f"{uid},{x},{y},{z},{rng.uniform(0.2, 1)}")
    for uid in sub:
        for _ in range(5):
            x, y, z = rng.uniform(-300, 300, 3)
            lines.append(f"{uid},{x},{y},{z},{rng.uniform(0, 0.8)}")
    pp = _write(tmp_path / "pred.csv", "\n".join(lines) + "\n")
    sp = _write(tmp_path / "uids.csv", "\n".join(sub) + "\n")
    out = tmp_path / "run"
    rc = froc.main(
        [
            "--annotations",
            os.path.join(LUNA, "annotations.csv"),
            "--excluded",
            os.path.join(LUNA, "annotations_excluded.csv"),
            "--seriesuids",
            sp,
            "--predictions",
            pp,
            "--out",
            str(out),
            "--bootstrap",
            "100",
            "--seed",
            "1",
            "--name",
            "beta+syn",
        ]
    )
    assert rc == 0
    res = json.loads((out / "froc.json").read_text())
    for k in (
        "cpm",
        "sensitivity_at",
        "cpm_ci",
        "sensitivity_ci",
        "n_nodules",
        "n_detected",
        "n_fp_marks",
        "n_scans",
        "curve",
    ):
        assert k in res
    assert list(res["sensitivity_at"]) == KEYS
    assert res["n_scans"] == 60 and res["n_nodules"] == keep.sum()
    assert res["name"] == "beta+syn"
    assert (out / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "table3_row.md").read_text().splitlines()
    assert md[-1].startswith("| beta+syn | ") and md[-1].count("|") == 10
    assert f"{res['cpm']:.3f} ({res['cpm_ci'][0]:.3f} - {res['cpm_ci'][1]:.3f})" in md[-1]
    # bad input: error exit code, message on stderr
    bad = _write(tmp_path / "bad.csv", lines[0] + "\nnot-a-scan,0,0,0,0.5\n")
    assert (
        froc.main(
            [
                "--annotations",
                os.path.join(LUNA, "annotations.csv"),
                "--seriesuids",
                sp,
                "--predictions",
                bad,
                "--out",
                str(tmp_path / "x"),
                "--bootstrap",
                "0",
            ]
        )
        == 2
    )


def test_froc_warns_on_scans_without_predictions(tmp_path, capsys):
    (tmp_path / "ann.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\na,0,0,0,5\n")
    (tmp_path / "uids.csv").write_text("a\nb\nc\n")
    (tmp_path / "p.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\na,0,0,0,0.9\n")
    assert froc.main(["--annotations", str(tmp_path / "ann.csv"), "--seriesuids",
                      str(tmp_path / "uids.csv"), "--predictions", str(tmp_path / "p.csv"),
                      "--out", str(tmp_path / "run"), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 of 3 scans" in err and "uids.csv" in err
    (tmp_path / "uids1.csv").write_text("a\n")
    assert froc.main(["--annotations", str(tmp_path / "ann.csv"), "--seriesuids",
                      str(tmp_path / "uids1.csv"), "--predictions", str(tmp_path / "p.csv"),
                      "--out", str(tmp_path / "run1"), "--bootstrap", "0"]) == 0
    assert "warning" not in capsys.readouterr().err
