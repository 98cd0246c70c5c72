"""A finished study as a committed results file (EVIDENCE.md): the report's text, its claims
counted by table and verdict, and the run's provenance (commit, command, date, wall time).

`python -m nodulejax.study.results WORKDIR --out EVIDENCE.md --command "..." --wall-seconds S`.
Every number is read from ``WORKDIR/report/report.md`` and ``WORKDIR/report/claims.json``, both
written by the study; figures stay in the workdir (the file keeps text only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

from nodulejax.errors import WorkdirError
from nodulejax.study.claims import VERDICTS

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
    """Markdown table: per table (white-box apart), how many claims hold / are contradicted /
    stay inconclusive / did not run; then the contradicted and holding claims by name."""
    def key(c):
        wb = c.get("protocol") == "white-box" and "white" not in c["table"]
        return c["table"] + (" (white-box)" if wb else "")

    tables = sorted({key(c) for c in claims})
    lines = ["| table | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for t in tables:
        row = [sum(key(c) == t and c["verdict"] == v for c in claims) for v in VERDICTS]
        lines.append(f"| {t} | " + " | ".join(map(str, row)) + " |")
    total = [sum(c["verdict"] == v for c in claims) for v in VERDICTS]
    lines.append("| **all** | " + " | ".join(f"**{n}**" for n in total) + " |")
    for v in ("contradicted", "holds"):
        names = [f"{key(c)}: {c['claim']}" for c in claims if c["verdict"] == v]
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodulejax.study.results", description=__doc__)
    ap.add_argument("workdir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True, help="the command that ran the study")
    ap.add_argument("--wall-seconds", type=float, required=True)
    ap.add_argument("--date", default="", help="the run's date (default: today)")
    ap.add_argument("--commit", default="", help="default: the workdir's git checkout's HEAD")
    a = ap.parse_args(argv)
    import datetime

    machine = f"{platform.platform()}, {os.cpu_count()} CPU cores"
    try:
        md = results_markdown(a.workdir, command=a.command,
                              commit=a.commit or _git_commit(a.workdir),
                              date=a.date or datetime.date.today().isoformat(),
                              wall_seconds=a.wall_seconds, machine=machine)
    except WorkdirError as e:
        print(f"results: WorkdirError: {e}", file=sys.stderr)
        return 2
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(md)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
