"""Assemble the paper's Table 3 (CPM with 95% CI and sensitivity at 1/8..8 FPs/scan per
experiment) from the ``froc.json`` files that ``nodulejax.evaluation.froc`` writes.

    python -m nodulejax.evaluation.table3 RUN_DIR... [--out table3.md]

Each RUN_DIR is searched (recursively) for ``froc.json``; a row's name is the JSON's ``name``
(else its folder's name). Rows whose names are the experiment names of Table 3 come first, in
the paper's order; other rows follow in the order given. Writes markdown to ``--out`` (and
stdout) and the same table as JSON next to it (``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from nodulejax.evaluation.froc import table3_header, table3_row

# Table 3 rows in the paper's order (configs/experiments.py names)
PAPER_ORDER = (
    "baseline-ce",
    "baseline-beta",
    "baseline-beta-finetune",
    "beta+syn (random)",
    "beta+syn",
    "beta+poisson",
    "beta+poisson+syn",
    "beta+perturb",
    "beta+perturb+syn",
)


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "-")


_RANK = {_norm(n): i for i, n in enumerate(PAPER_ORDER)}


def find_results(run_dirs: Sequence[str | os.PathLike]) -> list[tuple[str, dict, str]]:
    """``[(name, result, path)]`` for every ``froc.json`` under the run dirs (a path to a
    ``froc.json`` itself is accepted). Raises FileNotFoundError if a dir holds none."""
    found = []
    for d in run_dirs:
        d = os.fspath(d)
        paths = []
        if os.path.isfile(d):
            paths = [d]
        else:
            for root, dirs, files in os.walk(d):
                dirs.sort()
                if "froc.json" in files:
                    paths.append(os.path.join(root, "froc.json"))
        if not paths:
            raise FileNotFoundError(f"{d}: no froc.json found")
        for p in paths:
            with open(p) as f:
                res = json.load(f)
            name = res.get("name") or os.path.basename(os.path.dirname(os.path.abspath(p)))
            found.append((name, res, p))
    return found


def order_rows(rows: list[tuple[str, dict, str]]) -> list[tuple[str, dict, str]]:
    """Paper order for known experiment names (stable), then the others as given."""
    idx = {id(r): i for i, r in enumerate(rows)}
    return sorted(rows, key=lambda r: (_RANK.get(_norm(r[0]), len(PAPER_ORDER)), idx[id(r)]))


def assemble(run_dirs: Sequence[str | os.PathLike]) -> tuple[str, list[dict]]:
    """Markdown Table 3 and its rows as JSON-able dicts
    (name, cpm, cpm_ci, sensitivity_at, sensitivity_ci, n_nodules, n_scans, source)."""
    rows = order_rows(find_results(run_dirs))
    if not rows:
        raise FileNotFoundError("no runs given")
    md = [table3_header(rows[0][1])]
    md += [table3_row(res, name) for name, res, _ in rows]
    js = [
        {
            "name": name,
            "cpm": res["cpm"],
            "cpm_ci": res.get("cpm_ci"),
            "sensitivity_at": res["sensitivity_at"],
            "sensitivity_ci": res.get("sensitivity_ci"),
            "n_nodules": res.get("n_nodules"),
            "n_scans": res.get("n_scans"),
            "source": path,
        }
        for name, res, path in rows
    ]
    return "\n".join(md) + "\n", js


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nodulejax.evaluation.table3",
        description="Assemble Table 3 from froc.json run results.",
    )
    p.add_argument("runs", nargs="+", help="run dirs (searched for froc.json)")
    p.add_argument("--out", default="table3.md", help="markdown output; JSON goes to .json")
    a = p.parse_args(argv)
    try:
        md, js = assemble(a.runs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.splitext(a.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(js, f, indent=1)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
