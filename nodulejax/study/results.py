"""A finished study as a committed results file (EVIDENCE.md): the report's text, its claims
counted by table and verdict, and the run's provenance (commit, command, date, wall time).

`python -m nodulejax.study.results WORKDIR --out EVIDENCE.md --command "..." --wall_seconds S`.
Every number is read from ``WORKDIR/report/report.md`` and ``WORKDIR/report/claims.json``, both
written by the study; figures stay in the workdir (the file keeps text only).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence

from absl import flags

from nodulejax.errors import ConfigError, WorkdirError
from nodulejax.runtime.cli import run_main
from nodulejax.runtime.devices import host_cpu
from nodulejax.runtime.files import atomic_write_text
from nodulejax.study.claims import VERDICTS, table_label

# report.md sections carried over, in the report's order (figures-only sections are left out)
SECTIONS = ("Data", "Table 2: model complexity", "Table 3: FROC on the held-out test folds",
            "Tables 4-6: stress tests", "Synthesizer (Section 3.2)",
            "Do the paper's claims hold here?", "Deviations from the paper", "Stage times",
            "Environment", "Config")


def report_sections(text: str) -> dict[str, str]:
    """``## heading`` -> section body of a report.md, image lines dropped."""
    out, name, body = {}, None, []
    for line in text.splitlines():
        if line.startswith("## "):
            if name is not None:
                out[name] = "\n".join(body).strip()
            name, body = line[3:].strip(), []
        elif name is not None and not line.lstrip().startswith("!["):
            body.append(line)
    if name is not None:
        out[name] = "\n".join(body).strip()
    return out


def verdict_counts(claims: list[dict]) -> list[str]:
    """Markdown table: per table and protocol (``claims.table_label``), how many claims hold /
    are contradicted / stay inconclusive / did not run; then the contradicted and holding
    claims by name."""
    tables = sorted({table_label(c) for c in claims})
    lines = ["| table | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for t in tables:
        row = [sum(table_label(c) == t and c["verdict"] == v for c in claims) for v in VERDICTS]
        lines.append(f"| {t} | " + " | ".join(map(str, row)) + " |")
    total = [sum(c["verdict"] == v for c in claims) for v in VERDICTS]
    lines.append("| **all** | " + " | ".join(f"**{n}**" for n in total) + " |")
    for v in ("contradicted", "holds"):
        names = [f"{table_label(c)}: {c['claim']}" for c in claims if c["verdict"] == v]
        if names:
            lines += ["", f"{v.capitalize()}:", ""] + [f"- {n}" for n in names]
    return lines


def results_markdown(workdir: str, *, command: str, commit: str, date: str,
                     wall_seconds: float, machine: str) -> str:
    """The results file's text for the finished study in ``workdir``."""
    rep = os.path.join(workdir, "report")
    paths = [os.path.join(rep, n) for n in ("report.md", "claims.json")]
    for p in paths:
        if not os.path.exists(p):
            raise WorkdirError(f"{p}: missing; the study in {workdir} has not finished "
                               "(its report and claims stages write it)")
    with open(paths[0], encoding="utf-8") as f:
        text = f.read()
    with open(paths[1], encoding="utf-8") as f:
        claims = json.load(f)
    sec = report_sections(text)
    title = text.splitlines()[0].lstrip("# ").strip() if text else "study"
    m, s = divmod(int(round(wall_seconds)), 60)
    md = [f"# Results: {title}", "",
          f"- commit: `{commit}`", f"- command: `{command}`", f"- date: {date}",
          f"- wall time: {m // 60} h {m % 60:02d} min {s:02d} s (from `python3 -m venv` to "
          "`report.md`, fresh clone)", f"- machine: {machine}", "",
          "## Claims: verdicts per table", ""] + verdict_counts(claims)
    for name in SECTIONS:
        if name in sec:
            md += ["", f"## {name}", "", sec[name]]
    return "\n".join(md) + "\n"


def _git_commit(path: str) -> str:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _define(fv):
    flags.DEFINE_string("out", None, "results file to write (e.g. EVIDENCE.md)", flag_values=fv)
    flags.DEFINE_string("command", None, "the command that ran the study", flag_values=fv)
    flags.DEFINE_float("wall_seconds", None, "the run's wall time, s", flag_values=fv)
    flags.DEFINE_string("date", "", "the run's date (default: today)", flag_values=fv)
    flags.DEFINE_string("commit", "", "default: the workdir's git checkout's HEAD",
                        flag_values=fv)
    return ["out", "command", "wall_seconds"]


def _main(fv, args) -> int:
    if len(args) != 1:
        raise ConfigError(f"expected one WORKDIR (a finished study), got {len(args)}")
    wd = args[0]
    md = results_markdown(wd, command=fv["command"].value,
                          commit=fv["commit"].value or _git_commit(wd),
                          date=fv["date"].value or datetime.date.today().isoformat(),
                          wall_seconds=fv["wall_seconds"].value,
                          machine=f"{platform.platform()}, {host_cpu()}")
    atomic_write_text(fv["out"].value, md)
    print(f"wrote {fv['out'].value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nodulejax.study.results WORKDIR --out F --command C --wall_seconds S``."""
    return run_main("python -m nodulejax.study.results", _define, _main, argv, doc=__doc__,
                    config=None, positional=True)


if __name__ == "__main__":
    sys.exit(main())
