"""nodulejax.study.results: the committed results file from a finished study's report."""

import json

import pytest

from nodulejax.errors import WorkdirError
from nodulejax.study import results

REPORT = """# nodulejax study report: `evidence`

Intro line.

## Data

| split | scans |
|---|---|
| test | 24 |

![one scan](scan_summary.png)

## Table 3: FROC on the held-out test folds

| model | CPM |
|---|---|
| baseline-beta | 0.71 |

## Figs. 5, 6, 8, 9: adversarial examples (central axial slices, test folds)

![fig5](fig5.png)

## Do the paper's claims hold here?

claims table

## Stage times

| stage | seconds |
|---|---|
| cg | 300.0 |
"""


def _claim(table, verdict, name, protocol=None):
    c = {"table": table, "claim": name, "statistic": "s", "estimate": 0.1, "ci": [0.0, 0.2],
         "n": 10, "threshold": 0.0, "side": "greater", "verdict": verdict}
    if protocol:
        c["protocol"] = protocol
    return c


CLAIMS = [_claim("Table 3", "holds", "finetune >= beta"),
          _claim("Table 3", "inconclusive", "syn > random"),
          _claim("Table 6", "contradicted", "baseline < 0.22 on uniform noise", "transfer"),
          _claim("Table 5", "holds", "perturb keeps >= baseline under Adv.", "white-box"),
          _claim("Table 5", "holds", "x5 Poisson lowers the baseline", "transfer")]


@pytest.fixture
def workdir(tmp_path):
    rep = tmp_path / "report"
    rep.mkdir()
    (rep / "report.md").write_text(REPORT)
    (rep / "claims.json").write_text(json.dumps(CLAIMS))
    return tmp_path


def test_sections_keep_text_and_drop_images():
    sec = results.report_sections(REPORT)
    assert list(sec) == ["Data", "Table 3: FROC on the held-out test folds",
                         "Figs. 5, 6, 8, 9: adversarial examples (central axial slices, test "
                         "folds)", "Do the paper's claims hold here?", "Stage times"]
    assert "| test | 24 |" in sec["Data"] and "![" not in sec["Data"]
    assert sec["Figs. 5, 6, 8, 9: adversarial examples (central axial slices, test folds)"] == ""


def test_verdict_counts_per_table_with_white_box_apart():
    lines = results.verdict_counts(CLAIMS)
    assert "| Table 3 | 1 | 0 | 1 | 0 |" in lines
    assert "| Table 5 (transfer) | 1 | 0 | 0 | 0 |" in lines
    assert "| Table 5 (white-box) | 1 | 0 | 0 | 0 |" in lines
    assert "| Table 6 (transfer) | 0 | 1 | 0 | 0 |" in lines
    assert "| **all** | **3** | **1** | **1** | **0** |" in lines
    i = lines.index("Contradicted:")
    assert lines[i + 2] == "- Table 6 (transfer): baseline < 0.22 on uniform noise"


def test_results_file_has_provenance_and_report_text(workdir, tmp_path):
    out = tmp_path / "EVIDENCE.md"
    rc = results.main([str(workdir), "--out", str(out), "--command", "python train.py X",
                       "--wall_seconds", "4000.4", "--date", "2026-12-02", "--commit", "abc123"])
    assert rc == 0
    md = out.read_text()
    assert md.startswith("# Results: nodulejax study report: `evidence`")
    assert "- commit: `abc123`" in md and "- command: `python train.py X`" in md
    assert "- wall time: 1 h 06 min 40 s" in md and "- date: 2026-12-02" in md
    assert "## Table 3: FROC on the held-out test folds\n\n| model | CPM |" in md
    assert "adversarial examples" not in md  # a figures-only section is left out
    assert md.index("## Claims: verdicts per table") < md.index("## Data")


def test_unfinished_study_is_one_error_naming_the_file(workdir, tmp_path, capsys):
    (workdir / "report" / "claims.json").unlink()
    with pytest.raises(WorkdirError, match=r"claims\.json: missing"):
        results.results_markdown(str(workdir), command="c", commit="x", date="d",
                                 wall_seconds=1.0, machine="m")
    rc = results.main([str(workdir), "--out", str(tmp_path / "o.md"), "--command", "c",
                       "--wall_seconds", "1"])
    assert rc == 2 and not (tmp_path / "o.md").exists()
    assert capsys.readouterr().err.count("\n") == 1
