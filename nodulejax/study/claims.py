"""The paper's Section 5 claims as statistics with 95% bootstrap intervals: ``claims.json``.

Every claim of Section 5.2 (Table 3) and Section 5.3 (Tables 4-6) is one :class:`Claim`
(:data:`CLAIMS`): a statistic, a threshold and the side the paper claims. A claim that
names two models is split into one entry per model.

* Differences of Table 3 use the **paired** scan bootstrap (every model on the same resampled
  scans, FROC recomputed per resample, :func:`nodulejax.evaluation.bootstrap.paired_froc`).
  ``cpm`` is the mean sensitivity at the 7 FP rates (0.125 .. 8 FPs/scan); ``cpm<=0.5`` the
  mean at 0.125, 0.25 and 0.5 FPs/scan ("especially at the region of the lower number of
  false positives", Section 5.2).
* Differences of Tables 4-6 use the **paired** patch bootstrap over per-patch scores aligned
  across models (:func:`nodulejax.evaluation.bootstrap.paired_means`), except Table 4's
  random-vs-PGD comparison, whose two columns hold different nodules (filtered separately)
  and are resampled independently.
* Absolute claims are tested as the paper states them ("below 0.1": threshold 0.1, side less;
  "activated": mean above the decision threshold 0.5).
* "Similar" (``~``) is tested as ``|difference| < MARGIN``; "at least as good" (``>=``) as
  ``difference > -MARGIN`` (non-inferiority); "better" (``>``) as ``difference > 0``.
  ``MARGIN`` = 0.02 on the CPM or mean-confidence scale, fixed before any run.

Verdict (:func:`verdict`): "holds" when the whole CI lies on the claimed side of the
threshold, "contradicted" when it lies wholly on the other side, else "inconclusive";
"not run" (with a ``reason``) when a model, table or score file is missing from the run.

Stress entries carry ``protocol``: "white-box" when the scored model attacked itself (the
cell's ``"attacked": "self"``, a ``*_whitebox`` table, or, for stress.json files without
``attacked``, ``settings.noise_target == "self"`` on "Adv." / "PGD noise"), else "transfer"
(the same patches for every model). White-box tables' claims are listed apart.

**Between-run spread.** A patch interval says how the mean would vary over other patches,
not over other training runs; on noise patches, which the classifier scores almost alike,
it is nearly zero. With ``finetune_seeds`` = k > 1 every augmented fine-tune was trained k
times (seed replicas ``beta+perturb.s1`` ..., same pool and transfer inputs,
``experiments.split_replica``), and each transfer claim that names an augmented row is
evaluated on every replica: the entry keeps seed 0's estimate, patch CI and n, and adds
``seeds`` (each replica's estimate, CI and verdict) and ``between_seeds`` (k, min, max and
standard deviation of the estimates). A verdict that differs between seeds makes the entry
"inconclusive", with that reason. White-box claims are on seed 0 only (replicas are not
attacked); Table 3 claims are on seed 0's detections.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from nodulejax.errors import ResultsError
from nodulejax.evaluation import froc
from nodulejax.evaluation.bootstrap import (
    independent_means,
    interval,
    paired_froc,
    paired_means,
    read_scores,
)
from nodulejax.experiments import ATTACK_TARGET, AUGMENTED, file_name, replica_name, row_of_model
from nodulejax.runtime.files import atomic_write_json
from nodulejax.runtime.keys import STREAMS

__all__ = ["Claim", "CLAIMS", "MARGIN", "VERDICTS", "verdict", "table3_claims",
           "stress_claims", "whitebox_claims", "evaluate_claims", "write_claims", "table_label",
           "to_markdown", "run_claims"]

MARGIN = 0.02  # tolerance of "similar" and "at least as good" claims (CPM / confidence scale)
DECISION = 0.5  # an FPR output above this calls the patch a nodule ("activated")
VERDICTS = ("holds", "contradicted", "inconclusive", "not run")
BASE = ATTACK_TARGET  # "baseline-beta-finetune", the paper's conventional network
PERTURB = ("beta+perturb", "beta+perturb+syn")
POISSON = ("beta+poisson", "beta+poisson+syn")
ADVERSARIAL_COLUMNS = ("PGD sampled nodules", "Adv.", "PGD noise", "PGD negative patches")
_FPS_LOW = (0.125, 0.25, 0.5)


@dataclass(frozen=True)
class Claim:
    """One claim: ``kind`` "diff" (a - b), "absdiff" (|a - b|) or "value" (a).

    ``a``/``b``: Table 3 ``(row, metric)`` with metric "cpm" or "cpm<=0.5"; Tables 4-6
    ``(stress table key, model, column)``. ``paired``: b's samples are aligned with a's."""

    table: str
    claim: str
    kind: str
    a: tuple
    b: tuple | None
    threshold: float
    side: str
    paired: bool = True

    @property
    def statistic(self) -> str:
        fa = _term(self.a)
        if self.kind == "value":
            return fa
        d = f"{fa} - {_term(self.b)}"
        return f"|{d}|" if self.kind == "absdiff" else d


def _term(src: tuple) -> str:
    if len(src) == 2:
        return f"{'CPM' if src[1] == 'cpm' else 'sens@0.125-0.5'}({src[0]})"
    return f"mean({src[1]} | {src[2]})"


def _c3(claim, a, b, metric="cpm", kind="diff", thr=0.0, side="greater"):
    return Claim("Table 3", claim, kind, (a, metric), (b, metric), thr, side)


def table3_claims() -> list[Claim]:
    """Section 5.2's claims on Table 3 (clean benchmark, CPM)."""
    out = [
        _c3("baseline-beta produced similar CPM scores as baseline-ce", "baseline-beta",
            "baseline-ce", kind="absdiff", thr=MARGIN, side="less"),
        _c3("trained with CE then finetuned with the beta loss: slightly higher CPM",
            "baseline-beta-finetune", "baseline-beta", thr=-MARGIN),
        _c3("PGD-searched nodules consistently outperform randomly sampled ones", "beta+syn",
            "beta+syn (random)"),
        _c3("... especially at the lower number of false positives (<= 0.5 FPs/scan)",
            "beta+syn", "beta+syn (random)", metric="cpm<=0.5"),
        _c3("synthetic nodules improve the overall network generalization", "beta+syn", BASE),
    ]
    out += [_c3("perturbation augmentation slightly improves CPM over baseline-beta-finetune",
                r, BASE, thr=-MARGIN) for r in PERTURB]
    out += [_c3("perturbation augmented networks are not better than beta+syn", "beta+syn", r,
                thr=-MARGIN) for r in PERTURB]
    out += [_c3("Poisson augmentation achieved slightly higher detection performance", r, BASE,
                thr=-MARGIN) for r in POISSON]
    return out


def stress_claims(t4="table4", t5="table5", t6="table6", label="") -> list[Claim]:
    """Section 5.3's claims on Tables 4-6 (mean FPR confidence per patch)."""
    T4, T5, T6 = (f"Table {k}{label}" for k in (4, 5, 6))
    pgd4, adv, pn, pneg = ADVERSARIAL_COLUMNS
    out = [
        Claim(T4, "the baseline predicts PGD-searched nodules lower than random ones", "diff",
              (t4, BASE, pgd4), (t4, BASE, "Randomly sampled nodules"), 0.0, "less",
              paired=False),
        Claim(T4, "beta+syn recognises the PGD synthetic nodules with high confidence", "diff",
              (t4, "beta+syn", pgd4), (t4, BASE, pgd4), 0.0, "greater"),
        Claim(T5, "uniform noise reduces the baseline response (0.86 -> 0.81)", "diff",
              (t5, BASE, "0.9 uniform noise"), (t5, BASE, "0.0 uniform noise"), 0.0, "less"),
        Claim(T5, "x5 Poisson noise deactivates the baseline (0.86 -> 0.78)", "diff",
              (t5, BASE, "x5 Poisson noise"), (t5, BASE, "0.0 uniform noise"), 0.0, "less"),
    ]
    out += [Claim(T5, "perturbation augmented networks keep ~0.9 under PGD (baseline 0.25)",
                  "diff", (t5, r, adv), (t5, BASE, adv), -MARGIN, "greater") for r in PERTURB]
    out += [
        Claim(T6, "the baseline is not activated by uniform noise (below 0.22)", "value",
              (t6, BASE, "Uniform noise"), None, 0.22, "less"),
        Claim(T6, "pure adversarial noise easily activates the baseline (0.87)", "value",
              (t6, BASE, pn), None, DECISION, "greater"),
    ]
    out += [Claim(T6, "perturbation augmented networks: below 0.1 on PGD noise", "value",
                  (t6, r, pn), None, 0.1, "less") for r in PERTURB]
    out += [Claim(T6, "Poisson augmented networks are more robust to PGD noise", "diff",
                  (t6, r, pn), (t6, BASE, pn), 0.0, "less") for r in POISSON]
    out += [Claim(T6, "perturbation / Poisson augmented: more robust on PGD negative patches",
                  "diff", (t6, r, pneg), (t6, BASE, pneg), 0.0, "less")
            for r in PERTURB + POISSON]
    return out


CLAIMS = table3_claims() + stress_claims()


def whitebox_claims(tables) -> list[Claim]:
    """The adversarial-column stress claims again on the white-box tables present."""
    out = []
    for c in stress_claims("table4", "table5_whitebox", "table6_whitebox", " (white-box)"):
        t, _, col = c.a
        if t.endswith("_whitebox") and t in tables and col in ADVERSARIAL_COLUMNS:
            out.append(c)
    return out


def verdict(ci, threshold: float, side: str) -> str:
    """"holds" if the whole interval ``ci`` = [lo, hi] lies on ``side`` ("greater"/"less") of
    ``threshold``, "contradicted" if wholly on the other side, else "inconclusive"."""
    lo, hi = float(ci[0]), float(ci[1])
    if side not in ("greater", "less"):
        raise ValueError(f"side must be 'greater' or 'less', got {side!r}")
    above, below = lo > threshold, hi < threshold
    if side == "greater":
        return "holds" if above else "contradicted" if below else "inconclusive"
    return "holds" if below else "contradicted" if above else "inconclusive"


def _entry(c: Claim, estimate=None, ci=None, n=0, reason=None, **extra) -> dict:
    e = {"table": c.table, "claim": c.claim, "statistic": c.statistic,
         "estimate": None if estimate is None else float(estimate),
         "ci": None if ci is None else [float(ci[0]), float(ci[1])], "n": int(n),
         "threshold": float(c.threshold), "side": c.side,
         "verdict": "not run" if ci is None else verdict(ci, c.threshold, c.side)}
    if reason:
        e["reason"] = reason
    e.update(extra)
    return e


def _combine(c: Claim, a, b):
    """The statistic from a's and b's values (scalars or sample arrays)."""
    if c.kind == "value":
        return a
    return np.abs(a - b) if c.kind == "absdiff" else a - b


def _metric(sens, metric):
    """CPM-like statistic from sensitivities at froc.FPS (..., 7)."""
    cols = [i for i, f in enumerate(froc.FPS) if metric == "cpm" or f in _FPS_LOW]
    return np.asarray(sens)[..., cols].mean(-1)


def _table3(claims, entries, n_samples, seed) -> list[dict]:
    boot = paired_froc(entries, froc.FPS, n_samples, seed) if entries and n_samples else {}
    point = {}
    for name, e in entries.items():
        f, s, _ = froc.froc_curve(e)
        point[name] = froc.sensitivity_at(f, s, froc.FPS)
    out = []
    for c in claims:
        rows = [c.a[0]] + ([c.b[0]] if c.b else [])
        missing = [r for r in rows if r not in entries]
        if missing:
            out.append(_entry(c, reason=f"not trained/evaluated in this run: "
                                        f"{', '.join(missing)}"))
            continue
        if not boot:
            out.append(_entry(c, reason="no bootstrap resamples (config.eval.bootstrap = 0)"))
            continue
        val = lambda src, d: _metric(d[src[0]], src[1])  # noqa: E731
        est = _combine(c, val(c.a, point), val(c.b, point) if c.b else None)
        smp = _combine(c, val(c.a, boot), val(c.b, boot) if c.b else None)
        e0 = entries[c.a[0]]
        out.append(_entry(c, est, interval(smp), int(e0.nodules_per_scan.sum()),
                          n_scans=e0.n_scans))
    return out


def _protocol(c: Claim, stress: dict) -> str:
    t, model, col = c.a
    if col not in ADVERSARIAL_COLUMNS:
        return "transfer"
    if t.endswith("_whitebox"):
        return "white-box"
    cell = ((stress.get(t) or {}).get(model) or {}).get(col) or {}
    if "attacked" in cell:
        return "white-box" if cell["attacked"] == "self" else "transfer"
    self_attacked = (stress.get("settings") or {}).get("noise_target") == "self"
    return "white-box" if self_attacked and col in ("Adv.", "PGD noise") else "transfer"


def _stress_one(c: Claim, scores, n_samples, seed) -> dict:
    srcs = [c.a] + ([c.b] if c.b else [])
    missing = [s for s in srcs if s not in scores]
    if missing:
        return _entry(c, reason="no per-patch scores for " + ", ".join("/".join(s)
                                                                         for s in missing))
    arr = [scores[s] for s in srcs]
    if min(len(x) for x in arr) == 0:
        return _entry(c, reason="no patches in " + ", ".join("/".join(s) for s in srcs))
    try:
        if len(arr) == 1 or c.paired:
            smp = paired_means(dict(enumerate(arr)), n_samples, seed)
            sa, sb = smp[0], smp.get(1)
        else:
            sa, sb = independent_means(arr[0], arr[1], n_samples, seed)
    except ResultsError as e:  # e.g. columns that should be aligned are not: say so, go on
        return _entry(c, reason=str(e))
    est = _combine(c, arr[0].mean(), arr[1].mean() if c.b else None)
    n = len(arr[0]) if len(arr) == 1 or c.paired else min(len(x) for x in arr)
    return _entry(c, est, interval(_combine(c, sa, sb)), n)


def seed_replicas(c: Claim, k: int) -> list[Claim] | None:
    """Claim ``c`` on seed replica 0 .. k-1 of each augmented row it names (the replicas'
    score labels ``beta+perturb.s1``; the baseline is one model), or None when ``k`` < 2, the
    claim names no augmented row or is a white-box claim."""
    srcs = [c.a] + ([c.b] if c.b else [])
    if k < 2 or c.table == "Table 3" or any(s[0].endswith("_whitebox") for s in srcs):
        return None
    if not any(row_of_model(s[1]) in AUGMENTED for s in srcs):
        return None

    def on(src, s):
        t, model, col = src
        return (t, file_name(replica_name(model, s)), col) \
            if row_of_model(model) in AUGMENTED else src

    return [dataclasses.replace(c, a=on(c.a, s), b=on(c.b, s) if c.b else None)
            for s in range(k)]


def _with_seeds(entry: dict, per_seed: list[dict]) -> dict:
    """Seed 0's ``entry`` with the replicas' estimates, CIs and verdicts beside it."""
    entry["seeds"] = [{"seed": s, "estimate": e["estimate"], "ci": e["ci"],
                       "verdict": e["verdict"], **({"reason": e["reason"]} if "reason" in e
                                                   else {})}
                      for s, e in enumerate(per_seed)]
    est = [e["estimate"] for e in per_seed if e["estimate"] is not None]
    entry["between_seeds"] = {"k": len(per_seed), "n_run": len(est),
                              "min": min(est) if est else None, "max": max(est) if est else None,
                              "sd": float(np.std(est, ddof=1)) if len(est) > 1 else None}
    verdicts = [e["verdict"] for e in per_seed]
    if "not run" in verdicts[1:] and entry["verdict"] != "not run":
        missing = [str(s) for s, v in enumerate(verdicts) if v == "not run"]
        entry["reason"] = f"seed replica(s) {', '.join(missing)} not scored"
    elif len(set(verdicts)) > 1:
        entry["reason"] = ("the verdict differs between the fine-tune seeds: "
                           + ", ".join(f"seed {s} {v}" for s, v in enumerate(verdicts)))
        entry["verdict"] = "inconclusive"
    return entry


def _stress(claims, stress, scores, n_samples, seed, k=1) -> list[dict]:
    out = []
    for c in claims:
        proto = {"protocol": _protocol(c, stress or {})}
        if stress is None:
            out.append(_entry(c, reason="the stress stage did not run", **proto))
        elif scores is None:
            out.append(_entry(c, reason="eval/stress/scores.npz (per-patch scores) not "
                                        "found", **proto))
        elif not n_samples:
            out.append(_entry(c, reason="no bootstrap resamples (config.eval.bootstrap = 0)",
                              **proto))
        else:
            reps = seed_replicas(c, k)
            e = _stress_one(c, scores, n_samples, seed)
            if reps is not None and e["verdict"] != "not run":
                e = _with_seeds(e, [e] + [_stress_one(r, scores, n_samples, seed)
                                          for r in reps[1:]])
            out.append({**e, **proto})
    return out


def evaluate_claims(entries: dict, stress: dict | None, scores: dict | None, *,
                    n_samples: int, seed: int, finetune_seeds: int = 1) -> list[dict]:
    """Every claim of :data:`CLAIMS` (plus white-box tables' claims) -> claims.json entries.

    ``entries``: ``{Table 3 row: froc.FrocEntries}`` of the rows evaluated (same test scans);
    ``stress``: the stress.json dict (None if not run); ``scores``: ``{(table, model,
    column): (n,)}`` from :func:`nodulejax.evaluation.bootstrap.read_scores` (None if
    absent). Bootstrap draws: ``n_samples`` per claim from numpy streams of ``seed``.
    ``finetune_seeds``: seed replicas per augmented fine-tune (module docstring)."""
    s3 = (int(seed), STREAMS["claims/table3"])
    s4 = (int(seed), STREAMS["claims/stress"])
    out = _table3([c for c in CLAIMS if c.table == "Table 3"], entries, n_samples, s3)
    out += _stress([c for c in CLAIMS if c.table != "Table 3"], stress, scores, n_samples, s4,
                   int(finetune_seeds))
    wb = whitebox_claims(set(stress or {}))
    out += _stress(wb, stress, scores, n_samples, s4)
    return out


def write_claims(path: str, claims: list[dict]) -> None:
    atomic_write_json(path, claims, indent=1)


def _num(x) -> str:
    return "-" if x is None else f"{x:+.3f}" if x < 0 else f"{x:.3f}"


def table_label(c: dict) -> str:
    """A claim's table with its protocol, e.g. "Table 6 (transfer)", "Table 6 (white-box)"
    (white-box claims' table names already carry it), "Table 3"."""
    proto = c.get("protocol")
    return c["table"] + (f" ({proto})" if proto and proto not in c["table"] else "")


def to_markdown(claims: list[dict]) -> str:
    """claims.json as a table: claim, statistic, test, estimate, 95% CI, n, the estimates'
    range over the fine-tune seeds, verdict."""
    lines = ["| table | claim | statistic | test | estimate | 95% CI | n | seeds: range (k) | "
             "verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for c in claims:
        ci = c.get("ci")
        test = f"{'>' if c['side'] == 'greater' else '<'} {c['threshold']:g}"
        v = c["verdict"] + (f": {c['reason']}" if c.get("reason") else "")
        stat = c["statistic"].replace("|", "\\|")  # a pipe would split the table cell
        bs = c.get("between_seeds")
        spread = "-" if not bs or bs["min"] is None else \
            f"[{_num(bs['min'])}, {_num(bs['max'])}] ({bs['n_run']})"
        lines.append(f"| {table_label(c)} | {c['claim']} | {stat} | {test} | "
                     f"{_num(c.get('estimate'))} | "
                     f"{'-' if ci is None else f'[{_num(ci[0])}, {_num(ci[1])}]'} | "
                     f"{c['n']} | {spread} | **{v}** |")
    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    lines += ["", "Verdicts: " + ", ".join(f"{k} {n}" for k, n in counts.items()) + "."]
    return "\n".join(lines) + "\n"


def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_claims(workdir: str, data_root: str, rows, *, n_samples: int, seed: int,
               min_diameter_mm: float = 0.0, finetune_seeds: int = 1) -> str:
    """Read the run's predictions (Table 3 ``rows``), stress.json and scores.npz, evaluate
    every claim and write ``WORKDIR/report/claims.json``; returns its path. Included nodules
    below ``min_diameter_mm`` are irrelevant findings, as in the FROC of the evaluate stage
    (``froc.irrelevant_below``)."""
    ev = os.path.join(workdir, "eval")
    ann = os.path.join(data_root, "annotations.csv")
    exc = os.path.join(data_root, "annotations_excluded.csv")
    uids = os.path.join(ev, "seriesuids_test.csv")
    entries = {}
    for r in rows:
        pred = os.path.join(ev, "predictions", f"{file_name(r)}.csv")
        if os.path.exists(pred) and os.path.exists(uids):
            a, x, u, p, names = froc.read_files(ann, exc if os.path.exists(exc) else None,
                                                uids, pred)
            a, x = froc.irrelevant_below(a, x, min_diameter_mm)
            entries[r] = froc.match_marks(a, x, u, p, names=names)
    sdir = os.path.join(ev, "stress")
    stress = _load(os.path.join(sdir, "stress.json"))
    npz = os.path.join(sdir, "scores.npz")
    scores = read_scores(npz) if os.path.exists(npz) else None
    claims = evaluate_claims(entries, stress, scores, n_samples=n_samples, seed=seed,
                             finetune_seeds=finetune_seeds)
    path = os.path.join(workdir, "report", "claims.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_claims(path, claims)
    return path
