"""The study's report: ``WORKDIR/report/report.md`` with its figures.

Sections follow the paper: Table 2 (model sizes), Table 3 (FROC / CPM with bootstrap CIs per
experiment), FROC curves, Tables 4-6 (stress tests), Fig. 7 (toy), Figs. 5/6/8/9 style
mosaics, then the paper's claims as statistics (``claims.json``, study.claims), the
deviations from the paper (:mod:`nodulejax.study.deviations`), stage times,
the config and the package versions. Every number is read from the files the stages wrote.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
from collections.abc import Mapping
from importlib import metadata

import numpy as np

from nodulejax.evaluation.bootstrap import difference_interval, read_scores
from nodulejax.experiments import file_name
from nodulejax.models import summary
from nodulejax.runtime.config_tools import load_config
from nodulejax.runtime.devices import host_cpu
from nodulejax.runtime.keys import STREAMS
from nodulejax.study.claims import to_markdown as claims_markdown
from nodulejax.study.deviations import deviations_markdown

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "SimpleITK",
            "nibabel", "ml-collections", "tensorflow-datasets", "matplotlib")
PAPER_TABLE2 = {"resunet": (143.92e3, 67.15), "rpn": (276.93e3, 113.91), "fpr": (455.98e3, 17.24)}


def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _versions() -> str:
    rows = []
    for p in PACKAGES:
        try:
            rows.append(f"| {p} | {metadata.version(p)} |")
        except metadata.PackageNotFoundError:
            rows.append(f"| {p} | not installed |")
    return "| package | version |\n|---|---|\n" + "\n".join(rows)


def _table2(config) -> str:
    try:
        ours_paper = summary.summarize(load_config(str(config.report.paper_config)))
        ours_run = summary.summarize(config)
    except Exception as e:  # report what failed instead of losing the whole report
        return f"_Table 2 could not be computed: {type(e).__name__}: {e}_"
    lines = ["| network | input (paper / run) | paper params | paper GMACs | "
             "ours (paper config) params | ours GMACs | this run's params | this run's GMACs |",
             "|---|---|---|---|---|---|---|---|"]
    for k, (p, g) in PAPER_TABLE2.items():
        a, b = ours_paper[k], ours_run[k]
        size = config.fpr.patch_size if k == "fpr" else config.cg.input_size
        psize = 64 if k == "fpr" else 128
        lines.append(f"| {k} | {psize}^3 / {size}^3 | {p / 1e3:.2f}k | {g:.2f} | "
                     f"{a['params'] / 1e3:.2f}k | {a['gmacs']:.2f} | {b['params'] / 1e3:.2f}k | "
                     f"{b['gmacs']:.3f} |")
    return "\n".join(lines)


def _copy_fig(src, report_dir, name) -> str | None:
    if src and os.path.exists(src):
        dst = os.path.join(report_dir, name)
        if os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(src, dst)
        return name
    return None


def _claims(report_dir: str) -> list[str]:
    """``claims.json`` (written by the claims stage) rendered: estimate, CI, n, verdict."""
    claims = _load(os.path.join(report_dir, "claims.json"))
    if claims is None:
        return ["_claims stage did not run._"]
    return ["Each claim of the paper's Section 5 as a statistic with a 95% paired bootstrap "
            "interval (`report/claims.json`); \"holds\" / \"contradicted\" when the whole "
            "interval lies on the claimed / the other side of the threshold. The interval "
            "resamples patches (Tables 4-6) or scans (Table 3) of one training run; "
            "\"seeds\" gives the range of the estimate over the augmented fine-tunes' seed "
            "replicas (`train.finetune_seeds`, same pool and stress inputs), and a verdict that "
            "differs between seeds is inconclusive. Table 3 and the white-box tables are seed "
            "0's.", "", claims_markdown(claims)]


def synthesizer_markdown(quality: dict | None, stress: dict | None,
                         model: str = "baseline-beta-finetune", scores: Mapping | None = None,
                         n_samples: int = 1000, seed=0) -> list[str]:
    """The synthesizer's quality per run: reconstruction L1, the random samples' diameter-filter
    pass rate and sizes against the training cut-outs (``train.synth.synth_quality``), and the
    score gap ``mean P(random synthetic) - mean P(clean real positive)`` of ``model`` (Table 4
    "Randomly sampled nodules" minus Table 5 "0.0 uniform noise"; the paper: 0.82 - 0.86 =
    -0.04) with its 95% bootstrap interval: the two columns' per-patch ``scores``
    (``{(table, model, column): (n,)}``, ``evaluation.bootstrap.read_scores``) resampled
    independently ``n_samples`` times (``evaluation.bootstrap.difference_interval``); without
    scores (or with ``n_samples`` 0) the gap has no interval."""
    lines = []
    if quality:
        q = quality
        pct = lambda v: f"{v[1]:.1f} mm (10-90%: {v[0]:.1f}-{v[2]:.1f})"
        codes = ("z = m + A u, u ~ N(0, I), with (m, A A^T) the Gaussian fit of the training "
                 "cut-outs' aggregate posterior (synth.sampling = aggregate; the paper: "
                 "z ~ N(0, I))" if q.get("sampling") == "aggregate" else "z ~ N(0, I)")
        lines += [f"Trained on {q['num_cutouts']} nodule cut-outs: reconstruction L1 "
                  f"{q['recon_l1']:.4f} (mean |G(mu(x)) - x| on [0, 1]). Of "
                  f"{q['num_prior_samples']} random codes {codes}, {q['prior_pass_rate']:.1%} "
                  f"decode to a nodule of at least {q['min_diameter_mm']:g} mm (one draw; the "
                  f"pool and Table 4 retry). Diameter of the fusion mask: random samples "
                  f"{pct(q['prior_diameter_mm'])}, training cut-outs "
                  f"{pct(q['real_diameter_mm'])}; peak intensity {q['prior_peak'][1]:.2f} vs "
                  f"{q['real_peak'][1]:.2f}"
                  + (f"; one compact object (>= 90% of the mask in one component): "
                     f"{q['prior_compact_fraction']:.0%} of the random samples, "
                     f"{q['real_compact_fraction']:.0%} of the cut-outs."
                     if "prior_compact_fraction" in q else ".")]
        if q.get("rim_fit"):
            f = q["rim_fit"]
            lines += ["", f"Cut-outs: mask diameter = {f['slope']:.3f} x annotated diameter "
                      f"{f['offset_mm']:+.2f} mm (r = {f['r']:.3f}); the diameter filters "
                      f"subtract a rim of {q.get('diameter_rim_mm', 0.0):g} mm "
                      "(synth.diameter_rim_mm)."]
    try:
        a = stress["table4"][model]["Randomly sampled nodules"]
        b = stress["table5"][model]["0.0 uniform noise"]
    except (KeyError, TypeError):
        return lines or ["_synth or stress stage did not run._"]
    if a["n"] and b["n"]:
        gap = a["mean"] - b["mean"]
        keys = (("table4", model, "Randomly sampled nodules"), ("table5", model,
                                                                "0.0 uniform noise"))
        ci = ""
        if scores is not None and n_samples and all(k in scores for k in keys):
            lo, hi = difference_interval(scores[keys[0]], scores[keys[1]], n_samples, seed)
            ci = f" [{lo:+.3f}, {hi:+.3f}]"
        lines += ["", f"Score gap of {model}: random synthetic nodules {a['mean']:.3f} "
                  f"(n={a['n']}) - clean real positives {b['mean']:.3f} (n={b['n']}) = "
                  f"**{gap:+.3f}**{ci} (paper: 0.82 - 0.86 = -0.04)."]
    return lines


def write_report(study) -> str:
    """Assemble ``WORKDIR/report/report.md``; returns its path."""
    wd = study.workdir
    rep = os.path.join(wd, "report")
    os.makedirs(rep, exist_ok=True)
    stages = {os.path.basename(p)[:-5]: _load(p)
              for p in sorted(glob.glob(os.path.join(wd, "stages", "*.json")))}
    md = [f"# nodulejax study report: `{study.config.name}`", "",
          "Reimplementation of Liu et al., *No Surprises* (IEEE TMI), run end to end on "
          f"{'the synthetic chest-CT phantom' if study.config.data.kind == 'phantom' else 'LUNA16'}"
          ". Numbers below come from this run's files; they are not the paper's.", ""]

    data = stages.get("prepare") or {}
    md += ["## Data", "", "| split | scans | nodules | types |", "|---|---|---|---|"]
    for split in ("train", "val", "test"):
        d = data.get(split) or {}
        md.append(f"| {split} | {d.get('scans', '-')} | {d.get('nodules', '-')} | "
                  f"{d.get('types', '-')} |")
    if _copy_fig(os.path.join(rep, "scan_summary.png"), rep, "scan_summary.png"):
        md += ["", "![one scan](scan_summary.png)"]

    md += ["", "## Table 2: model complexity", "", _table2(study.config)]

    ev = stages.get("evaluate") or {}
    md += ["", "## Table 3: FROC on the held-out test folds", ""]
    t3 = os.path.join(wd, "eval", "table3.md")
    md.append(open(t3, encoding="utf-8").read() if os.path.exists(t3)
              else "_evaluate stage did not run._")
    cand = stages.get("detect") or {}
    if "candidate_sensitivity" in cand:
        md += ["", f"Candidate generation sensitivity at <= {study.config.cg.num_candidates} "
                   f"candidates per scan: {cand['candidate_sensitivity']:.3f} "
                   f"(mean {cand.get('mean_candidates', float('nan')):.1f} candidates per scan)."]
    for name in (ev.get("froc") or {}):
        png = os.path.join(wd, "eval", "froc", file_name(name), "froc.png")
        fig = _copy_fig(png, rep, f"froc_{file_name(name)}.png")
        if fig:
            md.append(f"\n![FROC {name}]({fig})")
    aucs = {**((stages.get("fpr") or {}).get("test") or {}),
            **((stages.get("augmented") or {}).get("test") or {})}
    if aucs:
        md += ["", "FPR classification on the held-out candidates (candidates_V2 of the test "
               "folds):", "", "| model | AUC | loss |", "|---|---|---|"]
        md += [f"| {k} | {v.get('auc', float('nan')):.4f} | {v.get('loss', float('nan')):.4f} |"
               for k, v in aucs.items()]

    md += ["", "## Tables 4-6: stress tests", ""]
    st_md = os.path.join(wd, "eval", "stress", "stress.md")
    st_json = os.path.join(wd, "eval", "stress", "stress.json")
    md.append(open(st_md, encoding="utf-8").read() if os.path.exists(st_md)
              else "_stress stage did not run._")
    for png in sorted(glob.glob(os.path.join(wd, "eval", "stress", "*.png"))):
        fig = _copy_fig(png, rep, os.path.basename(png))
        md.append(f"\n![{os.path.basename(png)}]({fig})")

    md += ["", "## Synthesizer (Section 3.2)", ""]
    npz = os.path.join(wd, "eval", "stress", "scores.npz")
    md += synthesizer_markdown((stages.get("synth") or {}).get("quality"), _load(st_json),
                               scores=read_scores(npz) if os.path.exists(npz) else None,
                               n_samples=int(study.config.eval.bootstrap),
                               seed=(int(study.config.seed), STREAMS["report/synth_gap"]))

    md += ["", "## Figs. 5, 6, 8, 9: adversarial examples (central axial slices, test folds)", ""]
    figs = (stages.get("figures") or {}).get("figures", [])
    captions = {"fig5": "Fig. 5: synthetic nodules before (top) / after (bottom) latent PGD, "
                        "with the attacked FPR's scores",
                "fig6": "Fig. 6: PGD perturbations of a positive patch, a noise patch and a "
                        "negative patch (original / adversarial / difference)",
                "fig8": "Fig. 8: real nodules (top) vs PGD-synthetic nodules (bottom)",
                "fig9": "Fig. 9: a nodule under uniform noise levels and under PGD"}
    for rel in figs:
        name = os.path.basename(rel)
        if _copy_fig(os.path.join(wd, rel), rep, name):
            md += [f"{captions.get(name[:4], name)}:", "", f"![{name}]({name})", ""]
    if not figs:
        md.append("_figures stage did not run._")

    toy = stages.get("toy")
    md += ["", "## Fig. 7: two-moons toy experiment", ""]
    if toy and _copy_fig(os.path.join(wd, "eval", "toy", "toy.png"), rep, "toy.png"):
        md += ["![toy](toy.png)", "", "```json", json.dumps(toy.get("panels", toy), indent=1,
                                                            default=str)[:3000], "```"]
    else:
        md.append("_toy stage did not run._")

    md += ["", "## Do the paper's claims hold here?", ""]
    md += _claims(rep)

    md += ["", "## Deviations from the paper", "", deviations_markdown(study.config)]

    md += ["", "## Stage times", "", "| stage | seconds |", "|---|---|"]
    md += [f"| {k} | {v.get('seconds', float('nan')):.1f} |" for k, v in stages.items() if v]
    total = sum(v.get("seconds", 0.0) for v in stages.values() if v)
    md += [f"| **total** | {total:.1f} |", "", "## Environment", "",
           f"Python {platform.python_version()} on {platform.platform()}; "
           f"CPU: {host_cpu()}; devices: {_devices()}.", "", _versions(), "", "## Config", "",
           "```", str(study.config), "```"]
    path = os.path.join(rep, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    return path


def _devices() -> str:
    import jax

    return ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))


def mean_std(x) -> str:
    """'0.82 ± 0.17' as in Tables 4-6."""
    x = np.asarray(x, float)
    return f"{x.mean():.2f} ± {x.std():.2f}" if x.size else "-"
