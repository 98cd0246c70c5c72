"""Stress tests of the FPR networks: Tables 4, 5 and 6 of the paper (Section 5.3).

For each FPR checkpoint, the mean +- std of its probability of "nodule" on:

* **Table 4** (Section 5.3.1): ``c.stress.num_synthetic`` synthetic nodules fused into lung
  background patches of the test scans, with random codes ("Randomly sampled nodules") and
  PGD-searched codes ("PGD sampled nodules", latent PGD ``c.pgd.latent_*``). Only nodules of
  at least ``c.stress.min_diameter_mm`` count (paper: 6 mm; each column filters its own).
* **Table 5** (Section 5.3.2): the test scans' positive patches (included nodules of at least
  ``c.eval.min_diameter_mm``, Section 4's benchmark rule) with uniform noise of each magnitude
  in ``c.stress.uniform_levels`` (0.0 = clean), Poisson noise at each scale of
  ``c.stress.poisson_scales`` (x50, x5) and "Adv.": image PGD (``c.pgd.image_*``).
* **Table 6**: uniform noise patches, PGD noise patches (``c.pgd.noise_*``), negative patches
  (``c.stress.negatives_per_scan`` random lung patches per test scan away from every finding)
  and PGD negative patches (``c.pgd.image_*``). ``c.stress.num_noise`` noise patches (0: as
  many as the negatives).

**Protocols.** Section 4 generates every adversarial input once, against
``c.stress.attack_target`` (baseline-beta-finetune), and feeds the same patches to every model
(transfer): ``table4`` / ``table5`` / ``table6``. Beyond the paper, with ``c.stress.whitebox``
the adversarial columns are repeated with each model attacking itself (same start keys):
``table5_whitebox`` ("Adv.") and ``table6_whitebox`` ("PGD noise", "PGD negative patches"),
on the first ``c.stress.whitebox_patches`` positives / noise / negative patches (0: all).
Every adversarial cell carries ``"attacked"``: the attacked checkpoint name (transfer) or
``"self"`` (white-box). Robustness curves (score vs radius) are in
:mod:`nodulejax.evaluation.curves` (``curves`` in ``stress.json``).

**Outputs** in ``out_dir``: ``stress.json``, ``stress.md``, ``robustness_curves.png`` and
``scores.npz``: the per-patch FPR probabilities of every cell, key ``"<table>/<model>/<column>"``
(e.g. ``"table5/beta+syn/Adv."``, ``"table6_whitebox/beta+syn/PGD noise"``, curves
``"curve_positives_transfer/beta+syn/eps=0.03"``), float64 arrays (n,). For one
``<table>/<column>`` the arrays of all models have the same length and index i is the same
input patch for every model (white-box: the attack of patch i started from the same key), so
model differences can be bootstrapped pairwise by patch.

All random draws come from ``c.stress.seed`` through the named streams of
:mod:`nodulejax.runtime.keys`, so the same seed gives the same patches.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from nodulejax.adversarial import noise
from nodulejax.adversarial.attacks import score_patches
from nodulejax.adversarial.synthetic import synthesize_filtered
from nodulejax.data.backgrounds import background_patches, positive_patches
from nodulejax.errors import CheckpointError, ConfigError
from nodulejax.evaluation.curves import plot_curves, robustness_curves
from nodulejax.evaluation.probes import apply_noise, image_attack
from nodulejax.experiments import canonical_model_name
from nodulejax.models.classifier import FPRHandle, GenHandle, load_fpr, load_generator
from nodulejax.runtime.batching import map_batches
from nodulejax.runtime.files import atomic_savez, atomic_write_json, atomic_write_text
from nodulejax.runtime.keys import STREAMS, item_keys

TABLE4_COLUMNS = ("Randomly sampled nodules", "PGD sampled nodules")
TABLE6_COLUMNS = ("Uniform noise", "PGD noise", "Negative patches", "PGD negative patches")
#: adversarial columns per table (they carry "attacked"); the white-box tables repeat these
ADVERSARIAL = {"table4": ("PGD sampled nodules",), "table5": ("Adv.",),
               "table6": ("PGD noise", "PGD negative patches")}
WHITEBOX_TABLES = ("table5_whitebox", "table6_whitebox")
_SYN, _UNI, _POI, _ADV = (STREAMS[f"stress/{k}"]
                          for k in ("synthetic", "uniform", "poisson", "adv"))
_NOISE, _NEG_ADV = STREAMS["stress/noise"], STREAMS["stress/negative_adv"]


def table5_columns(config) -> list[str]:
    s = config.stress
    return ([f"{float(a):.1f} uniform noise" for a in s.uniform_levels]
            + [f"x{float(k):g} Poisson noise" for k in s.poisson_scales] + ["Adv."])


def _stat(p, attacked: str | None = None) -> dict:
    p = np.asarray(p, np.float64)
    st = ({"mean": float("nan"), "std": float("nan"), "n": 0} if len(p) == 0 else
          {"mean": float(p.mean()), "std": float(p.std()), "n": int(len(p))})
    if attacked is not None:
        st["attacked"] = attacked
    return st


def benchmark_positives(scans, patch_size: int, min_diameter_mm: float):
    """Positive patches (N, P, P, P) of the included nodules of at least ``min_diameter_mm``
    (Section 4: "only ... nodules with the diameters larger than 6mm"; 0 keeps all)."""
    pos, _, _ = positive_patches(scans, patch_size)
    d = np.concatenate([np.ravel(s.nodules_diam_mm) for s in scans] or [np.zeros(0)])
    return pos[d >= float(min_diameter_mm)] if len(pos) else pos


def _noisy_positives(config, pos, seed: int, bs: int) -> dict:
    s, noisy = config.stress, {}
    if not len(pos):
        return noisy
    k = item_keys(seed, _UNI, np.arange(len(pos)))
    for a in s.uniform_levels:
        noisy[f"{float(a):.1f} uniform noise"] = (
            pos if float(a) == 0.0 else apply_noise(noise.uniform_noise, k, pos, float(a), bs))
    k = item_keys(seed, _POI, np.arange(len(pos)))
    for sc in s.poisson_scales:
        noisy[f"x{float(sc):g} Poisson noise"] = apply_noise(noise.poisson_noise, k, pos,
                                                              float(sc), bs)
    return noisy


def adversarial_inputs(config, fpr: FPRHandle, inp: dict) -> dict:
    """The image attacks of Tables 5-6 against ``fpr`` from the fixed keys of ``c.stress.seed``:
    ``pos_adv`` (Adv.), ``noise_adv`` (PGD noise), ``neg_adv`` (PGD negative patches)."""
    seed, pos, neg = int(config.stress.seed), inp["positives"], inp["negatives"]
    out = {"noise_adv": image_attack(fpr, None, inp["noise_keys"], 0.0, config, noise=True),
           "neg_adv": image_attack(fpr, neg, item_keys(seed, _NEG_ADV, np.arange(len(neg))),
                                   0.0, config)}
    out["pos_adv"] = (image_attack(fpr, pos, item_keys(seed, _ADV, np.arange(len(pos))), 1.0,
                                   config) if len(pos) else pos)
    return out


def stress_inputs(config, test_scans, target: FPRHandle, gen: GenHandle | None) -> dict:
    """The model-independent stress patches (all (N, P, P, P) float32 in [0, 1]); the
    adversarial ones (``syn_pgd``, ``pos_adv``, ``noise_adv``, ``neg_adv``) against ``target``."""
    s, p = config.stress, int(config.fpr.patch_size)
    seed, bs = int(s.seed), int(config.pgd.batch_size)
    scans = list(test_scans)
    neg, _, _ = background_patches(scans, p, int(s.negatives_per_scan), seed,
                                   salt=STREAMS["backgrounds/stress"])
    if len(neg) == 0:
        raise ConfigError("stress: no negative patches (config.stress.negatives_per_scan=0 or "
                          "no test scans)")
    pos = benchmark_positives(scans, p, float(config.eval.get("min_diameter_mm", 0.0)))
    out = {"negatives": neg, "positives": pos}
    n_syn = int(s.num_synthetic)
    if n_syn > 0 and gen is not None:
        items = np.arange(n_syn)
        keys = item_keys(seed, _SYN, items)
        dmin = float(s.get("min_diameter_mm", config.synth.min_diameter_mm))
        r = map_batches(lambda k, i: synthesize_filtered(k, target, gen, neg[i], config,
                                                         search=True, min_diameter_mm=dmin),
                        (keys, items % len(neg)), bs)
        out["syn_random"] = r["x_random"][r["ok_random"]]
        out["syn_pgd"] = r["x_pgd"][r["ok_pgd"] & r["ok_random"]]
    out["positives_noisy"] = _noisy_positives(config, pos, seed, bs)
    n_noise = int(s.get("num_noise", 0)) or len(neg)
    kn = item_keys(seed, _NOISE, np.arange(n_noise))
    out["noise_keys"] = kn
    out["uniform_patches"] = np.asarray(noise.uniform_noise_patches(
        jax.numpy.asarray(kn), n_noise, p))[..., 0]
    out.update(adversarial_inputs(config, target, out))
    return out


def _score_transfer(m, inp, target_name, bs, scores, label):
    """Tables 4-6 rows of model ``m`` on the shared inputs; fills ``scores``."""
    def cell(table, col, x, attacked=None):
        p = score_patches(m, x, bs)
        scores[f"{table}/{label}/{col}"] = p
        return _stat(p, attacked)

    t4 = ({TABLE4_COLUMNS[0]: cell("table4", TABLE4_COLUMNS[0], inp["syn_random"]),
           TABLE4_COLUMNS[1]: cell("table4", TABLE4_COLUMNS[1], inp["syn_pgd"], target_name)}
          if "syn_random" in inp else None)
    t5 = {k: cell("table5", k, v) for k, v in inp["positives_noisy"].items()}
    if len(inp["positives"]):
        t5["Adv."] = cell("table5", "Adv.", inp["pos_adv"], target_name)
    t6 = {"Uniform noise": cell("table6", "Uniform noise", inp["uniform_patches"]),
          "PGD noise": cell("table6", "PGD noise", inp["noise_adv"], target_name),
          "Negative patches": cell("table6", "Negative patches", inp["negatives"]),
          "PGD negative patches": cell("table6", "PGD negative patches", inp["neg_adv"],
                                       target_name)}
    return t4, t5, t6


def _score_whitebox(m, adv, bs, scores, label, has_pos):
    def cell(table, col, x):
        p = score_patches(m, x, bs)
        scores[f"{table}/{label}/{col}"] = p
        return _stat(p, "self")

    t5 = {"Adv.": cell("table5_whitebox", "Adv.", adv["pos_adv"])} if has_pos else {}
    t6 = {"PGD noise": cell("table6_whitebox", "PGD noise", adv["noise_adv"]),
          "PGD negative patches": cell("table6_whitebox", "PGD negative patches",
                                       adv["neg_adv"])}
    return t5, t6


def _first(inp: dict, n: int | None) -> dict:
    """The inputs of the white-box attacks: the first ``n`` positives, negatives and noise
    keys (and, for the attack target, its transfer attacks of them); ``None`` keeps all."""
    keys = ("positives", "negatives", "noise_keys", "pos_adv", "neg_adv", "noise_adv")
    return {k: (inp[k][:n] if k in keys and k in inp else inp[k]) for k in inp}


def _fmt(st: dict) -> str:
    if not st["n"]:
        return "n/a"
    return f"{st['mean']:.2f} ± {st['std']:.2f}"


def _md_table(title, tab, cols) -> list[str]:
    lines = [f"### {title}", "", "| Method | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for model, row in tab.items():
        lines.append(f"| {model} | " + " | ".join(_fmt(row[c]) if c in row else "n/a"
                                                   for c in cols) + " |")
    attacked = {}
    for row in tab.values():
        for c in cols:
            if c in row and "attacked" in row[c]:
                attacked.setdefault(c, row[c]["attacked"])
    if attacked:
        who = "; ".join(f"{c}: " + ("each model itself" if a == "self" else a)
                        for c, a in attacked.items())
        lines += ["", f"Attacked model per adversarial column: {who}."]
    return lines + [""]


def to_markdown(result: dict) -> str:
    lines = []
    for key, title, cols in (
            ("table4", "Table 4: FPR confidence on synthetic nodules (>= min diameter)",
             TABLE4_COLUMNS),
            ("table5", "Table 5: positive patches under uniform / Poisson noise and PGD "
             "(transfer, as in the paper)", result["table5_columns"]),
            ("table6", "Table 6: noise patches and negative patches (transfer, as in the "
             "paper)", TABLE6_COLUMNS),
            ("table5_whitebox", "Table 5, white-box (beyond the paper): each model attacked "
             "itself", ADVERSARIAL["table5"]),
            ("table6_whitebox", "Table 6, white-box (beyond the paper): each model attacked "
             "itself", ADVERSARIAL["table6"])):
        if result.get(key):
            lines += _md_table(title, result[key], cols)
    st = result["settings"]
    lines.append(f"n per column is in stress.json, per-patch scores in scores.npz. Transfer "
                 f"attacks against {st['attack_target']}; {st['num_positives']} positives "
                 f"(>= {st['eval_min_diameter_mm']:g} mm), {st['num_negatives']} negatives, "
                 f"{st['num_noise']} noise patches from {st['num_scans']} test scans"
                 + (f"; white-box tables on the first {st['whitebox_patches']} of each."
                    if st.get("whitebox_patches") else "."))
    return "\n".join(lines) + "\n"


def _load_models(c, workdir, model_names, models):
    names = [canonical_model_name(n) for n in model_names]
    if not names:
        raise ConfigError("run_stress: no model names given")
    if int(c.stress.get("whitebox_patches", 0)) < 0:
        raise ConfigError(f"config.stress.whitebox_patches: expected an int >= 0 (0: every "
                          f"patch), got {c.stress.whitebox_patches}")
    models = dict(models or {})
    for n in names:
        if n not in models:
            models[n] = load_fpr(c, workdir, n)
    target_name = canonical_model_name(str(c.stress.attack_target))
    if target_name not in models:
        models[target_name] = load_fpr(c, workdir, target_name)
    return names, models, target_name


def run_stress(config, workdir: str, test_scans, model_names, out_dir: str | None = None, *,
               replicas=(), models: dict | None = None, generator: GenHandle | None = None,
               progress: bool = False) -> dict:
    """Tables 4-6 (transfer and white-box) and the robustness curves for the FPR checkpoints
    ``model_names`` (``fpr_<row>`` or row names).

    ``replicas``: seed replicas of augmented rows (``fpr_beta+perturb.s1``), scored on the same
    transfer inputs only (rows ``beta+perturb.s1`` of Tables 4-6, no white-box attacks and no
    curves): the between-run spread of the claims (``study.claims``).

    ``models``: already loaded ``{name: FPRHandle}`` (others are loaded from ``workdir``);
    ``generator``: the synthesizer (default: the ``synth`` checkpoint; if it is missing
    Table 4 is skipped with a note). Writes the outputs of the module docstring to ``out_dir``
    (default ``WORKDIR/report/stress``) and returns the JSON dict."""
    t0 = time.time()
    c, s = config, config.stress
    out_dir = out_dir or os.path.join(workdir, "report", "stress")
    names, models, target_name = _load_models(c, workdir, model_names, models)
    replicas = [canonical_model_name(n) for n in replicas]
    models.update({n: load_fpr(c, workdir, n) for n in replicas if n not in models})
    notes = []
    if generator is None and int(s.num_synthetic) > 0:
        try:
            generator = load_generator(c, workdir)
        except (CheckpointError, ImportError) as e:
            notes.append(f"Table 4 skipped: no synthesizer ({e})")
    scans = list(test_scans)
    inp = stress_inputs(c, scans, models[target_name], generator)
    bs, scores = int(c.pgd.batch_size), {}
    res = {k: {} for k in ("table4", "table5", "table6") + WHITEBOX_TABLES}
    whitebox = bool(s.get("whitebox", True))
    n_wb = int(s.get("whitebox_patches", 0)) or None
    inp_wb = _first(inp, n_wb)
    from tqdm.auto import tqdm

    bar = tqdm(names + replicas, desc="stress", unit="model", disable=not progress,
               dynamic_ncols=True)
    for n in bar:
        label = n[4:] if n.startswith("fpr_") else n
        bar.set_postfix(model=label, part="transfer")
        t4, res["table5"][label], res["table6"][label] = _score_transfer(
            models[n], inp, target_name, bs, scores, label)
        if t4 is not None:
            res["table4"][label] = t4
        if whitebox and n not in replicas:
            # the target attacking itself is the transfer attack (same keys, same model)
            bar.set_postfix(model=label, part="white-box")
            adv = inp_wb if n == target_name else adversarial_inputs(c, models[n], inp_wb)
            res["table5_whitebox"][label], res["table6_whitebox"][label] = _score_whitebox(
                models[n], adv, bs, scores, label, len(inp["positives"]) > 0)
    bar.close()
    curves = robustness_curves(c, {n: models[n] for n in names}, models[target_name],
                               target_name, inp, scores)
    result = dict(res, curves=curves, table5_columns=table5_columns(c), settings={
        "attack_target": target_name, "whitebox": whitebox, "whitebox_patches": n_wb or 0,
        "replicas": [n[4:] if n.startswith("fpr_") else n for n in replicas],
        "num_scans": len(scans), "num_positives": len(inp["positives"]),
        "num_negatives": len(inp["negatives"]), "num_noise": len(inp["uniform_patches"]),
        "num_synthetic_requested": int(s.num_synthetic),
        "min_diameter_mm": float(s.get("min_diameter_mm", c.synth.min_diameter_mm)),
        "eval_min_diameter_mm": float(c.eval.get("min_diameter_mm", 0.0)),
        "pgd": c.pgd.to_dict() if hasattr(c.pgd, "to_dict") else dict(c.pgd),
        "seed": int(s.seed), "notes": notes, "seconds": round(time.time() - t0, 2),
        "device": str(jax.devices()[0])})
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "stress.json"), result, indent=1, default=str)
    atomic_savez(os.path.join(out_dir, "scores.npz"),
                 **{k: np.asarray(v, np.float64) for k, v in scores.items()})
    if curves.get("eps"):
        plot_curves(curves, os.path.join(out_dir, "robustness_curves.png"))
    md = to_markdown(result)
    if notes:
        md += "\n" + "\n".join(f"Note: {x}" for x in notes) + "\n"
    atomic_write_text(os.path.join(out_dir, "stress.md"), md)
    return result


__all__ = ["run_stress", "stress_inputs", "adversarial_inputs", "benchmark_positives",
           "to_markdown", "table5_columns", "TABLE4_COLUMNS", "TABLE6_COLUMNS", "ADVERSARIAL",
           "WHITEBOX_TABLES"]
