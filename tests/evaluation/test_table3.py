"""Table 3 assembly (nodulejax.evaluation.table3) from froc.json files written by froc."""

import json

import numpy as np
import pytest

from nodulejax.data.luna16 import Annotations, Predictions
from nodulejax.evaluation import froc, table3


def _result(seed):
    """A real froc.evaluate result on a small hand-built case."""
    rng = np.random.default_rng(seed)
    uids = [f"s{i}" for i in range(10)]
    a = Annotations(np.array(uids), np.zeros((10, 3)), np.full(10, 6.0))
    n = 40
    u = np.array([uids[i % 10] for i in range(n)])
    xyz = np.where(rng.random((n, 1)) < 0.3, 0.0, 100.0) + np.zeros((n, 3))
    p = Predictions(u, xyz, rng.random(n))
    return froc.evaluate(a, None, uids, p, bootstrap=50, seed=seed)


def test_rows_in_paper_order_markdown_and_json(tmp_path):
    names = ["beta+perturb+syn", "my-extra-run", "baseline-ce", "beta+syn (random)", "beta+syn"]
    results = {}
    for i, name in enumerate(names):
        d = tmp_path / f"run{i}" / "eval"
        froc.write_outputs(_result(i), d, name=name)
        results[name] = json.loads((d / "froc.json").read_text())
    out = tmp_path / "t3.md"
    assert (
        table3.main([str(tmp_path / f"run{i}") for i in range(len(names))] + ["--out", str(out)])
        == 0
    )
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| Method | CPM (95% CI) |") and "8 FPs/scan" in lines[0]
    got = [ln.split("|")[1].strip() for ln in lines[2:]]
    assert got == [
        "baseline-ce",
        "beta+syn (random)",
        "beta+syn",
        "beta+perturb+syn",
        "my-extra-run",
    ]
    for ln, name in zip(lines[2:], got, strict=True):
        r = results[name]
        assert f"{r['cpm']:.3f} ({r['cpm_ci'][0]:.3f} - {r['cpm_ci'][1]:.3f})" in ln
        assert ln.split("|")[-2].strip() == f"{r['sensitivity_at']['8']:.3f}"
    js = json.loads((tmp_path / "t3.json").read_text())
    assert [row["name"] for row in js] == got
    assert js[0]["cpm"] == results["baseline-ce"]["cpm"]
    assert js[0]["sensitivity_at"] == results["baseline-ce"]["sensitivity_at"]


def test_missing_froc_json_is_an_error(tmp_path, capsys):
    assert table3.main([str(tmp_path), "--out", str(tmp_path / "t.md")]) == 2
    assert "no froc.json" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        table3.assemble([str(tmp_path)])
