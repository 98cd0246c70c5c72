"""Stress tests of the FPR networks: Tables 4, 5 and 6 of the paper (Section 5.3).

For each FPR checkpoint, the mean +- std of its probability of "nodule" on:

* **Table 4** (Section 5.3.1): ``c.stress.num_synthetic`` synthetic nodules fused into lung
  background patches of the test scans, with random codes ("Randomly sampled nodules") and
  PGD-searched codes ("PGD sampled nodules", latent PGD ``c.pgd.latent_*`` against
  ``c.stress.attack_target``, the paper's baseline-beta-finetune). Only nodules of at least
  ``c.synth.min_diameter_mm`` count (each column filters its own nodules); the same patches are
  fed to every model.
* **Table 5** (Section 5.3.2): the test scans' positive patches with uniform noise of each
  magnitude in ``c.stress.uniform_levels`` (``attacks.uniform_noise``; 0.0 = clean), Poisson
  noise at each scale of ``c.stress.poisson_scales`` (x50, x5) and "Adv.": image PGD
  (``c.pgd.image_*``) against the model itself (``c.stress.noise_target = "self"``).
* **Table 6**: uniform noise patches, PGD noise patches (``attacks.adversarial_noise`` against
  the model itself), negative patches (``c.stress.negatives_per_scan`` random lung patches per
  test scan away from every finding) and PGD negative patches (``attacks.perturb_negatives``
  against ``c.stress.attack_target``, as Section 4 says). ``c.stress.num_noise`` noise
  patches (0: as many as the negatives).

All random draws come from ``c.stress.seed``, fixed per condition, so every model sees the same
noisy patches. Outputs ``stress.json`` and ``stress.md`` in ``out_dir``.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial import attacks, noise
from nodulejax.adversarial.synthetic import synthesize_filtered
from nodulejax.data.backgrounds import background_patches, positive_patches
from nodulejax.errors import CheckpointError, ConfigError
from nodulejax.experiments import canonical_model_name
from nodulejax.models.classifier import FPRHandle, GenHandle, load_fpr, load_generator
from nodulejax.runtime.batching import map_batches
from nodulejax.runtime.files import atomic_write_json, atomic_write_text
from nodulejax.runtime.keys import STREAMS, item_keys

TABLE4_COLUMNS = ("Randomly sampled nodules", "PGD sampled nodules")
TABLE6_COLUMNS = ("Uniform noise", "PGD noise", "Negative patches", "PGD negative patches")
_SYN, _UNI, _POI, _ADV = (STREAMS[f"stress/{k}"]
                          for k in ("synthetic", "uniform", "poisson", "adv"))
_NOISE, _NOISE_ADV, _NEG_ADV = (STREAMS[f"stress/{k}"] for k in ("noise", "noise_adv",
                                                                  "negative_adv"))


def table5_columns(config) -> list[str]:
    s = config.stress
    return ([f"{float(a):.1f} uniform noise" for a in s.uniform_levels]
            + [f"x{float(k):g} Poisson noise" for k in s.poisson_scales] + ["Adv."])


def _stat(p) -> dict:
    p = np.asarray(p, np.float64)
    if len(p) == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(p.mean()), "std": float(p.std()), "n": int(len(p))}


def score_patches(fpr: FPRHandle, x, bs: int) -> np.ndarray:
    """FPR probabilities (N,) of patches x (N, P, P, P), in fixed batches of ``bs``."""
    if len(x) == 0:
        return np.zeros(0)
    return map_batches(lambda xb: {"p": attacks.fpr_probabilities(
        fpr.model, fpr.variables, jnp.asarray(xb, jnp.float32)[..., None], head=fpr.head)},
        (np.asarray(x),), bs)["p"]


def image_attack(fpr: FPRHandle, x, keys, label: float, config, *, noise: bool = False):
    """Image PGD (label 1: hide nodules; 0: make fire) or adversarial noise from keys."""
    q = config.pgd
    kl = float(config.pool.get("kl_weight", 1.0))
    p = int(config.fpr.patch_size)

    def fn(k, *xb):
        if noise:
            r = attacks.adversarial_noise(jnp.asarray(k), fpr.model, fpr.variables, len(k), p,
                                          head=fpr.head, kl_weight=kl, eps=float(q.noise_eps),
                                          step_size=float(q.noise_step),
                                          steps=int(q.image_steps), norm=str(q.image_norm))
        else:
            r = attacks.perturb_patches(jnp.asarray(k), fpr.model, fpr.variables,
                                        jnp.asarray(xb[0], jnp.float32)[..., None], label,
                                        head=fpr.head, kl_weight=kl, eps=float(q.image_eps),
                                        step_size=float(q.image_step), steps=int(q.image_steps),
                                        norm=str(q.image_norm))
        return {"x": np.asarray(r.x_adv)[..., 0]}

    arrays = (keys,) if noise else (keys, x)
    return map_batches(fn, arrays, int(config.pgd.batch_size))["x"]


def apply_noise(fn, keys, x, level, bs):
    """``fn(keys, x[..., None], level)`` (a noise of :mod:`nodulejax.adversarial.noise`) over
    fixed batches of ``bs``; x (N, P, P, P) -> (N, P, P, P)."""
    return map_batches(lambda k, xb: {"x": np.asarray(fn(jnp.asarray(k), jnp.asarray(xb)[..., None],
                                                         level))[..., 0]}, (keys, x), bs)["x"]


def stress_inputs(config, test_scans, target: FPRHandle, gen: GenHandle | None) -> dict:
    """The model-independent stress patches (all (N, P, P, P) float32 in [0, 1])."""
    s, p = config.stress, int(config.fpr.patch_size)
    seed, bs = int(s.seed), int(config.pgd.batch_size)
    scans = list(test_scans)
    neg, _, _ = background_patches(scans, p, int(s.negatives_per_scan), seed,
                                   salt=STREAMS["backgrounds/stress"])
    pos, _, _ = positive_patches(scans, p)
    if len(neg) == 0:
        raise ConfigError("stress: no negative patches (config.stress.negatives_per_scan=0 or "
                          "no test scans)")
    out = {"negatives": neg, "positives": pos}
    # Table 4
    n_syn = int(s.num_synthetic)
    if n_syn > 0 and gen is not None:
        items = np.arange(n_syn)
        keys = item_keys(seed, _SYN, items)
        r = map_batches(lambda k, i: synthesize_filtered(k, target, gen, neg[i], config,
                                                         search=True),
                        (keys, items % len(neg)), bs)
        out["syn_random"] = r["x_random"][r["ok_random"]]
        out["syn_pgd"] = r["x_pgd"][r["ok_pgd"] & r["ok_random"]]
        out["syn_prob_target"] = {"random": r["prob_random"], "pgd": r["prob_pgd"]}
    # Table 5 noisy positives
    noisy = {}
    if len(pos):
        k = item_keys(seed, _UNI, np.arange(len(pos)))
        for a in s.uniform_levels:
            noisy[f"{float(a):.1f} uniform noise"] = (
                pos if float(a) == 0.0 else apply_noise(noise.uniform_noise, k, pos,
                                                         float(a), bs))
        k = item_keys(seed, _POI, np.arange(len(pos)))
        for sc in s.poisson_scales:
            noisy[f"x{float(sc):g} Poisson noise"] = apply_noise(noise.poisson_noise, k, pos,
                                                                  float(sc), bs)
    out["positives_noisy"] = noisy
    # Table 6
    n_noise = int(s.get("num_noise", 0)) or len(neg)
    kn = item_keys(seed, _NOISE, np.arange(n_noise))
    out["noise_keys"] = kn
    out["uniform_patches"] = np.asarray(noise.uniform_noise_patches(
        jnp.asarray(kn), n_noise, p))[..., 0]
    out["neg_adv"] = image_attack(target, neg, item_keys(seed, _NEG_ADV, np.arange(len(neg))),
                                   0.0, config)
    return out


def _fmt(st: dict) -> str:
    if not st["n"]:
        return "n/a"
    return f"{st['mean']:.2f} ± {st['std']:.2f}"


def to_markdown(result: dict) -> str:
    lines = []
    for key, title, cols in (
            ("table4", "Table 4: FPR confidence on synthetic nodules (>= min diameter)",
             TABLE4_COLUMNS),
            ("table5", "Table 5: positive patches under uniform / Poisson noise and PGD",
             result["table5_columns"]),
            ("table6", "Table 6: noise patches and negative patches", TABLE6_COLUMNS)):
        tab = result.get(key) or {}
        if not tab:
            continue
        lines += [f"### {title}", "", "| Method | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for model, row in tab.items():
            lines.append(f"| {model} | " + " | ".join(_fmt(row[c]) if c in row else "n/a"
                                                       for c in cols) + " |")
        lines.append("")
    st = result["settings"]
    lines.append(f"n per column is in stress.json. Attack target: {st['attack_target']}; "
                 f"{st['num_positives']} positives, {st['num_negatives']} negatives, "
                 f"{st['num_noise']} noise patches from {st['num_scans']} test scans.")
    return "\n".join(lines) + "\n"


def run_stress(config, workdir: str, test_scans, model_names, out_dir: str | None = None, *,
               models: dict | None = None, generator: GenHandle | None = None,
               progress: bool = False) -> dict:
    """Tables 4-6 for the FPR checkpoints ``model_names`` (``fpr_<row>`` or row names).

    ``models``: already loaded ``{name: FPRHandle}`` (others are loaded from ``workdir``);
    ``generator``: the synthesizer (default: the ``synth`` checkpoint; if it is missing
    Table 4 is skipped with a note). Writes ``stress.json`` and ``stress.md`` to ``out_dir``
    (default ``WORKDIR/report/stress``) and returns the JSON dict."""
    t0 = time.time()
    c, s = config, config.stress
    out_dir = out_dir or os.path.join(workdir, "report", "stress")
    names = [canonical_model_name(n) for n in model_names]
    if not names:
        raise ConfigError("run_stress: no model names given")
    models = dict(models or {})
    for n in names:
        if n not in models:
            models[n] = load_fpr(c, workdir, n)
    target_name = canonical_model_name(str(s.attack_target))
    target = models.get(target_name) or load_fpr(c, workdir, target_name)
    notes = []
    if generator is None and int(s.num_synthetic) > 0:
        try:
            generator = load_generator(c, workdir)
        except (CheckpointError, ImportError) as e:
            notes.append(f"Table 4 skipped: no synthesizer ({e})")
    inp = stress_inputs(c, test_scans, target, generator)
    bs = int(c.pgd.batch_size)
    t4, t5, t6 = {}, {}, {}
    cols5 = table5_columns(c)
    for n in names:
        m = models[n]
        label = n[4:] if n.startswith("fpr_") else n
        if "syn_random" in inp:
            t4[label] = {TABLE4_COLUMNS[0]: _stat(score_patches(m, inp["syn_random"], bs)),
                         TABLE4_COLUMNS[1]: _stat(score_patches(m, inp["syn_pgd"], bs))}
        self_t = m if str(s.noise_target) == "self" else models.get(
            canonical_model_name(str(s.noise_target))) or load_fpr(c, workdir, str(s.noise_target))
        row = {k: _stat(score_patches(m, v, bs)) for k, v in inp["positives_noisy"].items()}
        pos = inp["positives"]
        if len(pos):
            adv = image_attack(self_t, pos, item_keys(int(s.seed), _ADV, np.arange(len(pos))),
                                1.0, c)
            row["Adv."] = _stat(score_patches(m, adv, bs))
        t5[label] = row
        noise_adv = image_attack(self_t, None, inp["noise_keys"], 0.0, c, noise=True)
        t6[label] = {"Uniform noise": _stat(score_patches(m, inp["uniform_patches"], bs)),
                     "PGD noise": _stat(score_patches(m, noise_adv, bs)),
                     "Negative patches": _stat(score_patches(m, inp["negatives"], bs)),
                     "PGD negative patches": _stat(score_patches(m, inp["neg_adv"], bs))}
        if progress:
            print(f"[stress] {label}: done ({time.time() - t0:.1f} s)", flush=True)
    result = {
        "table4": t4, "table5": t5, "table6": t6, "table5_columns": cols5,
        "settings": {"attack_target": target_name, "noise_target": str(s.noise_target),
                     "num_scans": len(list(test_scans)), "num_positives": len(inp["positives"]),
                     "num_negatives": len(inp["negatives"]),
                     "num_noise": len(inp["uniform_patches"]),
                     "num_synthetic_requested": int(s.num_synthetic),
                     "min_diameter_mm": float(c.synth.min_diameter_mm),
                     "pgd": c.pgd.to_dict() if hasattr(c.pgd, "to_dict") else dict(c.pgd),
                     "seed": int(s.seed), "notes": notes,
                     "seconds": round(time.time() - t0, 2),
                     "device": str(jax.devices()[0])}}
    atomic_write_json(os.path.join(out_dir, "stress.json"), result, indent=1, default=str)
    md = to_markdown(result)
    if notes:
        md += "\n" + "\n".join(f"Note: {x}" for x in notes) + "\n"
    atomic_write_text(os.path.join(out_dir, "stress.md"), md)
    return result


__all__ = ["run_stress", "stress_inputs", "to_markdown", "table5_columns", "TABLE4_COLUMNS",
           "TABLE6_COLUMNS"]
