"""Assemble the paper's Table 3 (CPM with 95% CI and sensitivity at 1/8..8 FPs/scan per
experiment) from the ``froc.json`` files that ``nodulejax.evaluation.froc`` writes.

    python -m nodulejax.evaluation.table3 RUN_DIR... [--out table3.md]

Each RUN_DIR is searched (recursively) for ``froc.json``; a row's name is the JSON's ``name``
(else its folder's name). Rows whose names are the experiment names of Table 3
(``nodulejax.experiments.ALL_ROWS``) come first, in the paper's order; other rows follow in the
order given. Writes markdown to ``--out`` (and stdout) and the same table as JSON next to it
(``.json``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from absl import flags

from nodulejax.errors import ConfigError
from nodulejax.experiments import ALL_ROWS
from nodulejax.runtime.cli import run_main
from nodulejax.runtime.files import atomic_write_json, atomic_write_text


def table3_row(result: dict, name: str) -> str:
    """Markdown row in the layout of the paper's Table 3:
    ``| name | CPM (lo - hi) | sens@0.125 | .. | sens@8 |``."""
    ci = result.get("cpm_ci")
    cpm = f"{result['cpm']:.3f}" + (f" ({ci[0]:.3f} - {ci[1]:.3f})" if ci else "")
    sens = [f"{v:.3f}" for v in result["sensitivity_at"].values()]
    return "| " + " | ".join([name, cpm, *sens]) + " |"


def table3_header(result_or_keys) -> str:
    keys = list(
        result_or_keys["sensitivity_at"] if isinstance(result_or_keys, dict) else result_or_keys
    )
    head = "| Method | CPM (95% CI) | " + " | ".join(f"{k} FPs/scan" for k in keys) + " |"
    return head + "\n|" + "---|" * (2 + len(keys))


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "-")


_RANK = {_norm(n): i for i, n in enumerate(ALL_ROWS)}  # the paper's order


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
    return sorted(rows, key=lambda r: (_RANK.get(_norm(r[0]), len(ALL_ROWS)), idx[id(r)]))


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


def _define(fv):
    flags.DEFINE_string("out", "table3.md", "markdown output; the JSON goes next to it (.json)",
                        flag_values=fv)


def _main(fv, runs) -> int:
    if not runs:
        raise ConfigError("no RUN_DIR given: pass the folders holding froc.json files (the "
                          "study's WORKDIR/eval/froc)")
    md, js = assemble(runs)
    out = fv["out"].value
    atomic_write_text(out, md)
    atomic_write_json(os.path.splitext(out)[0] + ".json", js, indent=1)
    sys.stdout.write(md)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nodulejax.evaluation.table3 RUN_DIR...``: exit code."""
    return run_main("python -m nodulejax.evaluation.table3", _define, _main, argv,
                    doc=__doc__, config="optional", positional=True)


if __name__ == "__main__":
    sys.exit(main())
