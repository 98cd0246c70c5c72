"""The paper's claims as statistics (nodulejax.study.claims): the verdict rule on hand-made
intervals, every Section 5 claim listed, claims.json's schema, Table 3 estimates equal to the
FROC evaluation's CPMs, Tables 4-6 decided on hand-built per-patch scores, "not run" with a
reason for what a run lacks, and the transfer / white-box protocol labels."""

import json

import numpy as np
import pytest

from nodulejax.data.luna16 import Annotations, Predictions
from nodulejax.evaluation import froc
from nodulejax.study import claims as cl

KEYS = {"table", "claim", "statistic", "estimate", "ci", "n", "threshold", "side", "verdict"}
BASE = "baseline-beta-finetune"


@pytest.mark.parametrize("ci,thr,side,want", [
    ((0.01, 0.2), 0.0, "greater", "holds"),
    ((-0.3, -0.05), 0.0, "greater", "contradicted"),
    ((-0.05, 0.1), 0.0, "greater", "inconclusive"),
    ((0.02, 0.08), 0.1, "less", "holds"),
    ((0.15, 0.4), 0.1, "less", "contradicted"),
    ((0.05, 0.12), 0.1, "less", "inconclusive"),
    ((0.0, 0.3), 0.0, "greater", "inconclusive"),  # touching the threshold is not "whole"
])
def test_verdict_rule_on_hand_made_intervals(ci, thr, side, want):
    assert cl.verdict(ci, thr, side) == want


def test_every_section5_claim_is_listed():
    tables = [c.table for c in cl.CLAIMS]
    # Table 3: 7 claims, the perturb / poisson ones split per row
    assert tables.count("Table 3") == 11
    assert tables.count("Table 4") == 2 and tables.count("Table 5") == 4
    assert tables.count("Table 6") == 10
    stats = {c.statistic for c in cl.CLAIMS}
    assert "sens@0.125-0.5(beta+syn) - sens@0.125-0.5(beta+syn (random))" in stats
    assert "|CPM(baseline-beta) - CPM(baseline-ce)|" in stats
    assert "mean(beta+perturb | PGD noise)" in stats
    absolute = [c for c in cl.CLAIMS if c.statistic == "mean(beta+perturb | PGD noise)"][0]
    assert (absolute.threshold, absolute.side) == (0.1, "less")


def _table3_entries(n_scans=40):
    """beta+syn finds every nodule (p 0.9, no FP); the baseline finds half of them with FPs."""
    uids = [f"s{i}" for i in range(n_scans)]
    a = Annotations(np.array(uids), np.zeros((n_scans, 3)), np.full(n_scans, 8.0))
    empty = Annotations(np.zeros(0, str), np.zeros((0, 3)), np.zeros(0))
    good = Predictions(np.array(uids), np.zeros((n_scans, 3)), np.full(n_scans, 0.9))
    u = uids[::2] + uids
    xyz = np.r_[np.zeros((len(uids[::2]), 3)), np.full((n_scans, 3), 300.0)]
    bad = Predictions(np.array(u), xyz, np.r_[np.full(len(uids[::2]), 0.5),
                                              np.full(n_scans, 0.95)])
    return ({"beta+syn": froc.match_marks(a, empty, uids, good),
             BASE: froc.match_marks(a, empty, uids, bad)},
            {"beta+syn": froc.evaluate(a, empty, uids, good, bootstrap=0)["cpm"],
             BASE: froc.evaluate(a, empty, uids, bad, bootstrap=0)["cpm"]})


def _stress(attacked=None, whitebox=False):
    cell = {"mean": 0.0, "std": 0.0, "n": 1}
    if attacked:
        cell["attacked"] = attacked
    t6 = {m: {"PGD noise": dict(cell)} for m in (BASE, "beta+perturb", "beta+perturb+syn")}
    st = {"table4": {}, "table5": {}, "table6": t6, "settings": {"noise_target": "self"}}
    if whitebox:
        st["table6_whitebox"] = {m: {"PGD noise": dict(cell, attacked="self")} for m in t6}
    return st


def _scores(rng, n=300):
    s = {("table6", BASE, "PGD noise"): np.clip(0.9 + 0.05 * rng.standard_normal(n), 0, 1),
         ("table6", "beta+perturb", "PGD noise"): rng.uniform(0.0, 0.1, n),
         ("table6", "beta+perturb+syn", "PGD noise"): rng.uniform(0.2, 0.4, n),
         ("table5", BASE, "0.0 uniform noise"): rng.uniform(0.8, 0.9, n)}
    s[("table5", BASE, "0.9 uniform noise")] = s[("table5", BASE, "0.0 uniform noise")] - 0.05
    return s


def _by_stat(out, table_prefix="Table"):
    return {c["statistic"]: c for c in out if c["table"].startswith(table_prefix)}


def test_claims_json_schema_and_decisions_on_built_results(tmp_path):
    rng = np.random.default_rng(0)
    entries, cpm = _table3_entries()
    out = cl.evaluate_claims(entries, _stress(), _scores(rng), n_samples=200, seed=1)
    assert len(out) == len(cl.CLAIMS)
    path = tmp_path / "claims.json"
    cl.write_claims(str(path), out)
    back = json.loads(path.read_text())
    assert back == out
    for c in back:
        assert KEYS <= set(c) and c["verdict"] in cl.VERDICTS
        assert ("protocol" in c) == (c["table"] != "Table 3")
    t3 = _by_stat(back, "Table 3")["CPM(beta+syn) - CPM(baseline-beta-finetune)"]
    assert t3["estimate"] == pytest.approx(cpm["beta+syn"] - cpm[BASE])
    assert t3["verdict"] == "holds" and t3["n"] == 40 and t3["n_scans"] == 40
    lo, hi = t3["ci"]
    assert lo <= t3["estimate"] <= hi
    nr = _by_stat(back, "Table 3")["CPM(beta+syn) - CPM(beta+syn (random))"]
    assert nr["verdict"] == "not run" and "beta+syn (random)" in nr["reason"]
    s = _by_stat(back)
    assert s["mean(baseline-beta-finetune | PGD noise)"]["verdict"] == "holds"  # > 0.5
    assert s["mean(beta+perturb | PGD noise)"]["verdict"] == "holds"  # < 0.1
    wrong = s["mean(beta+perturb+syn | PGD noise)"]
    assert wrong["verdict"] == "contradicted" and wrong["estimate"] == pytest.approx(
        _scores(np.random.default_rng(0))[("table6", "beta+perturb+syn", "PGD noise")].mean())
    uni = s["mean(baseline-beta-finetune | 0.9 uniform noise) - "
            "mean(baseline-beta-finetune | 0.0 uniform noise)"]
    assert uni["estimate"] == pytest.approx(-0.05) and uni["ci"] == pytest.approx([-0.05] * 2)
    assert uni["verdict"] == "holds" and uni["n"] == 300  # paired: the same positives
    gone = s["mean(beta+poisson | PGD noise) - mean(baseline-beta-finetune | PGD noise)"]
    assert gone["verdict"] == "not run" and "table6/beta+poisson/PGD noise" in gone["reason"]
    md = cl.to_markdown(back)
    for c in back:
        assert c["statistic"].replace("|", "\\|") in md
    assert "| \\|CPM(baseline-beta) - CPM(baseline-ce)\\| | < 0.02 |" in md
    rows = [line for line in md.splitlines() if line.startswith("| Table")]
    assert len(rows) == len(back)
    assert all(line.replace("\\|", "").count("|") == 10 for line in rows)  # 9 cells each
    assert "Verdicts: holds" in md


def test_missing_stages_give_not_run_with_reasons():
    out = cl.evaluate_claims({}, None, None, n_samples=50, seed=0)
    assert len(out) == len(cl.CLAIMS)
    assert all(c["verdict"] == "not run" and c["reason"] and c["ci"] is None for c in out)
    assert any("stress stage did not run" in c["reason"] for c in out)
    out = cl.evaluate_claims({}, _stress(), None, n_samples=50, seed=0)
    assert any("scores.npz" in c.get("reason", "") for c in out)


def test_protocol_labels_and_whitebox_tables_listed_apart():
    rng = np.random.default_rng(1)
    scores = _scores(rng)
    # old stress.json (no "attacked"): noise_target "self" makes PGD noise white-box
    s = _by_stat(cl.evaluate_claims({}, _stress(), scores, n_samples=20, seed=0), "Table 6")
    assert s["mean(beta+perturb | PGD noise)"]["protocol"] == "white-box"
    assert s["mean(baseline-beta-finetune | Uniform noise)"]["protocol"] == "transfer"
    # cells naming the attacked checkpoint: transfer; white-box tables come as extra entries
    for k in list(scores):
        if k[0] == "table6":
            scores[("table6_whitebox", *k[1:])] = scores[k] * 0.5
    out = cl.evaluate_claims({}, _stress("fpr_baseline-beta-finetune", whitebox=True), scores,
                             n_samples=20, seed=0)
    tr = {c["statistic"]: c for c in out
          if c["table"] == "Table 6"}["mean(beta+perturb | PGD noise)"]
    assert tr["protocol"] == "transfer"
    wb = [c for c in out if c["table"] == "Table 6 (white-box)"]
    assert len(out) == len(cl.CLAIMS) + len(wb) and len(wb) == 9  # 5 PGD noise + 4 PGD negatives
    assert all(c["protocol"] == "white-box" for c in wb)
    wb_pn = {c["statistic"]: c for c in wb}["mean(beta+perturb | PGD noise)"]
    assert wb_pn["estimate"] == pytest.approx(0.5 * tr["estimate"])
    assert {c["statistic"] for c in wb} <= {c.statistic for c in cl.CLAIMS}


def test_misaligned_paired_columns_are_not_run_with_the_reason():
    rng = np.random.default_rng(3)
    sc = _scores(rng)
    sc[("table5", BASE, "0.9 uniform noise")] = sc[("table5", BASE, "0.9 uniform noise")][:-1]
    out = _by_stat(cl.evaluate_claims({}, _stress(), sc, n_samples=20, seed=0), "Table 5")
    c = out["mean(baseline-beta-finetune | 0.9 uniform noise) - "
            "mean(baseline-beta-finetune | 0.0 uniform noise)"]
    assert c["verdict"] == "not run" and "not aligned" in c["reason"]


def test_same_seed_same_claims():
    rng = np.random.default_rng(2)
    entries, _ = _table3_entries(12)
    sc = _scores(rng)
    a = cl.evaluate_claims(entries, _stress(), sc, n_samples=30, seed=4)
    b = cl.evaluate_claims(entries, _stress(), sc, n_samples=30, seed=4)
    c = cl.evaluate_claims(entries, _stress(), sc, n_samples=30, seed=5)
    assert a == b and a != c


def test_seed_replicas_give_the_between_run_spread_and_split_verdicts_are_inconclusive():
    """finetune_seeds = 3: a Table 6 claim on an augmented row is evaluated on each replica
    (labels beta+perturb.s1, .s2); seeds that agree keep the verdict with the spread beside it,
    seeds that disagree make it inconclusive naming each seed's verdict; a baseline-only claim
    and the white-box claims carry no seeds."""
    rng = np.random.default_rng(5)
    sc = _scores(rng)
    for k, lo in ((1, 0.02), (2, 0.04)):  # beta+perturb below 0.1 on every seed
        sc[("table6", f"beta+perturb.s{k}", "PGD noise")] = rng.uniform(lo, lo + 0.05, 300)
    sc[("table6", "beta+perturb+syn.s1", "PGD noise")] = rng.uniform(0.0, 0.05, 300)  # holds
    sc[("table6", "beta+perturb+syn.s2", "PGD noise")] = rng.uniform(0.2, 0.4, 300)
    for k in list(sc):
        if k[0] == "table6":
            sc[("table6_whitebox", *k[1:])] = sc[k]
    out = cl.evaluate_claims({}, _stress("fpr_baseline-beta-finetune", whitebox=True), sc,
                             n_samples=50, seed=0, finetune_seeds=3)
    s = {c["statistic"]: c for c in out if c["table"] == "Table 6"}  # transfer
    agree = s["mean(beta+perturb | PGD noise)"]
    assert agree["verdict"] == "holds" and "reason" not in agree
    assert [e["seed"] for e in agree["seeds"]] == [0, 1, 2]
    ests = [sc[("table6", m, "PGD noise")].mean()
            for m in ("beta+perturb", "beta+perturb.s1", "beta+perturb.s2")]
    assert [e["estimate"] for e in agree["seeds"]] == pytest.approx(ests)
    assert agree["estimate"] == pytest.approx(ests[0])  # seed 0's estimate and patch CI
    bs = agree["between_seeds"]
    assert bs["k"] == bs["n_run"] == 3 and bs["min"] == pytest.approx(min(ests))
    assert bs["max"] == pytest.approx(max(ests)) and bs["sd"] == pytest.approx(np.std(ests, ddof=1))
    split = s["mean(beta+perturb+syn | PGD noise)"]
    assert [e["verdict"] for e in split["seeds"]] == ["contradicted", "holds", "contradicted"]
    assert split["verdict"] == "inconclusive" and "seed 1 holds" in split["reason"]
    assert "seeds" not in s["mean(baseline-beta-finetune | PGD noise)"]
    wb = [c for c in out if c["table"] == "Table 6 (white-box)"]
    assert wb and all("seeds" not in c for c in wb)
    # a replica the run did not score is named, the verdict is seed 0's
    del sc[("table6", "beta+perturb.s2", "PGD noise")]
    out = _by_stat(cl.evaluate_claims({}, _stress(), sc, n_samples=50, seed=0,
                                      finetune_seeds=3), "Table 6")
    miss = out["mean(beta+perturb | PGD noise)"]
    assert miss["verdict"] == "holds" and "replica(s) 2 not scored" in miss["reason"]
    md = cl.to_markdown(list(out.values()))
    assert f"[{min(ests[:2]):.3f}, {max(ests[:2]):.3f}] (2) |" in md
