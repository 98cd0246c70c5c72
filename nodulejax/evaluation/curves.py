"""Robustness curves (beyond the paper): mean FPR score vs image-PGD radius.

For every FPR model and each radius ``eps`` of ``c.stress.curve_eps`` (L-inf on [0, 1]
intensities, the ball of Eq. 11 of the paper), the mean probability of "nodule" on

* ``positives``: the first ``c.stress.curve_patches`` benchmark positive patches perturbed to
  hide the nodule (attack 2, label 1; eps 0 = clean patches), and
* ``noise``: the first ``c.stress.curve_patches`` uniform-noise patches pushed to fire
  (attack 3, label 0; eps 0 = the uniform noise itself),

under two protocols: ``transfer`` (attacks computed once against the attack target and fed
to every model, as Section 4 runs its stress tests) and ``whitebox`` (each model attacks
itself from the same start keys). The PGD step is ``eps`` times the configured step/radius
ratio of the attack (``c.pgd.image_step / image_eps`` resp. ``noise_step / noise_eps``; the
paper's 0.05 / 0.15 = 1/3), the number of steps that of the attack (``image_steps`` /
``noise_steps``). All nonzero radii of one model and kind run packed in one PGD call (a
radius per patch): cost ``2 * models * ceil(curve_patches * nonzero radii / pgd.batch_size)``
PGD batches (the target's white-box curve is its transfer curve).

``curves`` dict: ``eps`` (list), ``n_positives``, ``n_noise``, ``attacked`` (the transfer
target), and ``positives`` / ``noise`` -> ``transfer`` / ``whitebox`` -> model -> list of
means (one per eps).
"""

from __future__ import annotations

import os

import numpy as np

from nodulejax.adversarial.attacks import score_patches
from nodulejax.evaluation.probes import image_attack
from nodulejax.runtime.files import atomic_write
from nodulejax.runtime.keys import STREAMS, item_keys

__all__ = ["robustness_curves", "plot_curves"]

_ADV = STREAMS["stress/adv"]


def _label(name: str) -> str:
    return name[4:] if name.startswith("fpr_") else name


def _attack_set(config, fpr, kind, x, keys, eps_list):
    """Attacked patches per radius: {eps: (n, P, P, P)} against ``fpr``; all nonzero radii
    in one packed PGD call (radius per patch), patch i from key i at every radius."""
    q, n = config.pgd, len(x)
    out = {e: x for e in eps_list if e == 0.0}
    radii = [e for e in eps_list if e != 0.0]
    if not radii:
        return out
    eps = np.repeat(np.asarray(radii, np.float32), n)
    rep_keys = np.concatenate([np.asarray(keys)] * len(radii))
    if kind == "positives":
        adv = image_attack(fpr, np.concatenate([x] * len(radii)), rep_keys, 1.0, config,
                           eps=eps, step_size=eps * float(q.image_step) / float(q.image_eps))
    else:
        adv = image_attack(fpr, None, rep_keys, 0.0, config, noise=True, eps=eps,
                           step_size=eps * float(q.noise_step) / float(q.noise_eps))
    for i, e in enumerate(radii):
        out[e] = adv[i * n:(i + 1) * n]
    return out


def robustness_curves(config, models: dict, target, target_name: str, inp: dict,
                      scores: dict | None = None) -> dict:
    """Curves of the module docstring for ``models`` ({checkpoint name: FPRHandle}), attacked
    in transfer against ``target`` (the FPRHandle named ``target_name``), on the inputs ``inp`` of
    :func:`nodulejax.evaluation.stress.stress_inputs`. Per-patch scores go to ``scores``
    under ``curve_<kind>_<protocol>/<model>/eps=<eps>``. Empty dict without ``curve_eps``."""
    s = config.stress
    eps_list = [float(e) for e in s.get("curve_eps", ())]
    if not eps_list:
        return {}
    n = int(s.get("curve_patches", 32))
    bs = int(config.pgd.batch_size)
    pos = inp["positives"][:n]
    sets = {"positives": (pos, item_keys(int(s.seed), _ADV, np.arange(len(pos)))),
            "noise": (inp["uniform_patches"][:n], inp["noise_keys"][:n])}
    scores = {} if scores is None else scores
    out = {"eps": eps_list, "n_positives": int(len(pos)), "n_noise": int(len(sets["noise"][0])),
           "attacked": target_name}
    for kind, (x, keys) in sets.items():
        out[kind] = {"transfer": {}, "whitebox": {}}
        if not len(x):
            continue
        transfer = _attack_set(config, target, kind, x, keys, eps_list)
        for name, m in models.items():
            own = transfer if name == target_name else _attack_set(config, m, kind, x, keys,
                                                                   eps_list)
            for proto, sets_e in (("transfer", transfer), ("whitebox", own)):
                means = []
                for e in eps_list:
                    p = score_patches(m, sets_e[e], bs)
                    scores[f"curve_{kind}_{proto}/{_label(name)}/eps={e:g}"] = p
                    means.append(float(np.mean(p)))
                out[kind][proto][_label(name)] = means
    return out


def plot_curves(curves: dict, path: str | os.PathLike) -> None:
    """One PNG: 2 x 2 panels (positives / noise x transfer / white-box), mean FPR score vs
    radius, one line per model."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    eps = curves["eps"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), dpi=100, sharex=True, sharey=True)
    titles = {"positives": "perturbed positives (lower = fooled)",
              "noise": "PGD noise (higher = fooled)"}
    for i, kind in enumerate(("positives", "noise")):
        for j, proto in enumerate(("transfer", "whitebox")):
            ax = axes[i, j]
            for model, means in curves.get(kind, {}).get(proto, {}).items():
                ax.plot(eps, means, marker="o", lw=1.5, label=model)
            who = f"against {_label(curves['attacked'])}" if proto == "transfer" else "self"
            ax.set_title(f"{titles[kind]}\n{proto} ({who})", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if i == 1:
                ax.set_xlabel("L-inf radius eps on [0, 1]")
            if j == 0:
                ax.set_ylabel("mean P(nodule)")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
