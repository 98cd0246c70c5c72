"""Mosaics of central axial slices like the paper's Figs. 5, 6, 8 and 9 (PNG, matplotlib Agg).

* Fig. 5 (:func:`fig5_synthetic`): synthetic nodules before (random code) and after latent PGD,
  each titled with the attacked FPR's probability of "nodule".
* Fig. 6 (:func:`fig6_perturbations`): rows = perturbed positive, adversarial noise, PGD
  negative; columns = original, adversarial, difference ``|adv - orig|`` shown with the window
  [0, 0.3] (the images with [0, 1]), as the paper's caption says.
* Fig. 8 (:func:`fig8_real_vs_synthetic`): real nodule patches (top) vs PGD synthetic nodules.
* Fig. 9 (:func:`fig9_noise`): nodules under each uniform noise level and adversarial noise.

:func:`make_figures` computes the examples from the trained models and writes all four.
Patches are (N, P, P, P) in [0, 1]; the slice shown is ``x[P // 2]`` (axial, z), except for
the synthetic nodules of Figs. 5 and 8: a decoded nodule need not be centred in z, so they are
shown at the axial slice where the fused nodule covers the most voxels
(:func:`nodule_slice`, the same slice for an item's random and PGD versions).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial import noise
from nodulejax.adversarial.attacks import score_patches
from nodulejax.adversarial.synthetic import synthesize_filtered
from nodulejax.data.backgrounds import background_patches, positive_patches
from nodulejax.errors import CheckpointError
from nodulejax.evaluation.probes import apply_noise, image_attack
from nodulejax.models.classifier import load_fpr, load_generator
from nodulejax.runtime.batching import map_batches
from nodulejax.runtime.keys import STREAMS, item_keys


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def central(x) -> np.ndarray:
    """Central axial slice(s): (P, P, P) -> (P, P); (N, P, P, P) -> (N, P, P); a slice already
    chosen, (P, P), is returned as is."""
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        return x
    return x[x.shape[-3] // 2] if x.ndim == 3 else x[:, x.shape[-3] // 2]


def nodule_slice(fused, background) -> int:
    """Axial index of the slice where a fused synthetic nodule covers the most voxels: the
    voxels where ``fused`` (P, P, P), or any of several versions of it (K, P, P, P), e.g. its
    random and PGD codes, differs from its ``background`` (P, P, P) (the fusion mask of
    Eq. 7); ``P // 2`` when none differs."""
    f = np.asarray(fused, np.float32)
    differs = np.abs(f.reshape((-1,) + f.shape[-3:]) - np.asarray(background, np.float32)) > 1e-6
    area = differs.any(axis=0).sum(axis=(1, 2))
    return int(np.argmax(area)) if area.any() else int(area.shape[0] // 2)


def _grid(path, rows, row_labels, titles=None, vmax=None, suptitle=""):
    """rows: list of lists of (P, P, P) patches; titles: same nesting (str) or None."""
    plt = _plt()
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(1.7 * nc + 0.6, 1.8 * nr + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            hi = vmax[i][j] if isinstance(vmax, list) else (vmax or 1.0)
            ax.imshow(central(row[j]), cmap="gray", vmin=0.0, vmax=hi, interpolation="nearest")
            if titles is not None and titles[i][j]:
                ax.set_title(titles[i][j], fontsize=7)
        axes[i][0].set_ylabel(row_labels[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig5_synthetic(path, x_random, x_pgd, prob_random, prob_pgd, n: int = 8) -> str:
    """Fig. 5: synthetic nodules (fused) before / after latent PGD with their FPR scores."""
    k = min(n, len(x_random))
    return _grid(path, [list(x_random[:k]), list(x_pgd[:k])], ["random code", "PGD code"],
                 [[f"p={v:.2f}" for v in prob_random[:k]], [f"p={v:.2f}" for v in prob_pgd[:k]]],
                 suptitle="Fig. 5: synthetic nodules before / after PGD (FPR probability)")


def fig6_perturbations(path, examples) -> str:
    """Fig. 6: ``examples`` = [(label, original, adversarial, prob_before, prob_after)]."""
    rows, labels, titles, vmax = [], [], [], []
    for label, x0, xa, pb, pa in examples:
        x0, xa = np.asarray(x0, np.float32), np.asarray(xa, np.float32)
        rows.append([x0, xa, np.abs(xa - x0)])
        labels.append(label)
        titles.append([f"original p={pb:.2f}", f"adversarial p={pa:.2f}", "|diff| [0, 0.3]"])
        vmax.append([1.0, 1.0, 0.3])
    return _grid(path, rows, labels, titles, vmax,
                 suptitle="Fig. 6: PGD perturbations (difference window [0, 0.3])")


def fig8_real_vs_synthetic(path, real, synthetic, n: int = 8) -> str:
    """Fig. 8: real nodule patches (top) vs PGD synthetic nodules (bottom)."""
    k = max(min(n, len(real)), min(n, len(synthetic)))
    return _grid(path, [list(real[:k]), list(synthetic[:k])], ["real", "PGD synthetic"],
                 suptitle="Fig. 8: real nodules vs PGD synthetic nodules")


def fig9_noise(path, nodules, levels, noisy, adversarial, probs=None) -> str:
    """Fig. 9: ``noisy[i][j]`` = nodule i with uniform noise ``levels[j]``; ``adversarial[i]``.
    ``probs[i]``: FPR scores of the row (len(levels) + 1) or None."""
    rows, titles = [], []
    for i in range(len(nodules)):
        rows.append(list(noisy[i]) + [adversarial[i]])
        names = [f"{a:.1f} uniform" for a in levels] + ["adversarial"]
        if probs is not None:
            names = [f"{t} p={p:.2f}" for t, p in zip(names, probs[i], strict=False)]
        titles.append(names)
    return _grid(path, rows, [f"nodule {i}" for i in range(len(nodules))], titles,
                 suptitle="Fig. 9: uniform noise levels and adversarial noise")


def make_figures(config, workdir: str, scans, out_dir: str | None = None, *,
                 fpr_model_name: str | None = None, fpr=None, generator=None,
                 n: int = 8) -> list[str]:
    """Compute examples against the attacked FPR (``c.stress.attack_target``) on ``scans`` and
    write fig5/fig6/fig8/fig9 PNGs to ``out_dir`` (default ``WORKDIR/eval/figures``).
    Figs. 5 and 8 need the synthesizer (skipped without one). Batches are padded to
    ``c.pgd.batch_size`` so the pool's / stress test's compiled attacks are reused.
    Returns the paths written."""
    c = config
    out_dir = out_dir or os.path.join(workdir, "eval", "figures")
    fpr = fpr or load_fpr(c, workdir, fpr_model_name or str(c.stress.attack_target))
    if generator is None:
        try:
            generator = load_generator(c, workdir)
        except (CheckpointError, ImportError):
            generator = None
    p, seed, bs = int(c.fpr.patch_size), int(c.stress.seed) + 7, int(c.pgd.batch_size)
    scans = list(scans)
    bg, _, _ = background_patches(scans, p, max(1, -(-n // max(len(scans), 1))), seed)
    pos, _, _ = positive_patches(scans, p)
    paths = []
    if generator is not None and len(bg):
        k = min(n, len(bg))
        r = map_batches(lambda kk, i: synthesize_filtered(kk, fpr, generator, bg[i], c,
                                                          search=True),
                        (item_keys(seed, STREAMS["figures/synthetic"], np.arange(k)),
                         np.arange(k)), bs)
        zs = [nodule_slice(np.stack([r["x_random"][i], r["x_pgd"][i]]), bg[i])
              for i in range(k)]
        x_r = [r["x_random"][i][z] for i, z in enumerate(zs)]
        x_p = [r["x_pgd"][i][z] for i, z in enumerate(zs)]
        paths.append(fig5_synthetic(os.path.join(out_dir, "fig5_synthetic_pgd.png"),
                                    x_r, x_p, r["prob_random"], r["prob_pgd"], n))
        paths.append(fig8_real_vs_synthetic(os.path.join(out_dir, "fig8_real_vs_synthetic.png"),
                                            pos[:n], x_p, n))
    ex = []
    key = item_keys(seed, STREAMS["figures/perturbations"], np.arange(1))
    if len(pos):
        adv = image_attack(fpr, pos[:1], key, 1.0, c)
        pb, pa = score_patches(fpr, np.concatenate([pos[:1], adv]), bs)
        ex.append(("positive", pos[0], adv[0], pb, pa))
    # the start of attacks.adversarial_noise: uniform noise from split(key)[0]
    k_start = jax.random.split(jnp.asarray(key[0]), 2)[0][None]
    x0 = np.asarray(noise.uniform_noise_patches(k_start, 1, p))[..., 0]
    adv = image_attack(fpr, None, key, 0.0, c, noise=True)
    pb, pa = score_patches(fpr, np.concatenate([x0, adv]), bs)
    ex.append(("noise", x0[0], adv[0], pb, pa))
    if len(bg):
        adv = image_attack(fpr, bg[:1], key, 0.0, c)
        pb, pa = score_patches(fpr, np.concatenate([bg[:1], adv]), bs)
        ex.append(("negative", bg[0], adv[0], pb, pa))
    paths.append(fig6_perturbations(os.path.join(out_dir, "fig6_perturbations.png"), ex))
    if len(pos):
        m = min(2, len(pos))
        nod = pos[:m]
        levels = [float(v) for v in c.stress.uniform_levels]
        kk = item_keys(seed, STREAMS["figures/noise_levels"], np.arange(m))
        noisy = [apply_noise(noise.uniform_noise, kk, nod, a, bs) for a in levels]
        adv = image_attack(fpr, nod, kk, 1.0, c)
        probs = [score_patches(fpr, np.stack([v[i] for v in noisy] + [adv[i]]), bs)
                 for i in range(m)]
        paths.append(fig9_noise(os.path.join(out_dir, "fig9_noise_levels.png"), nod, levels,
                                [[v[i] for v in noisy] for i in range(m)], list(adv), probs))
    return paths


__all__ = ["make_figures", "nodule_slice", "fig5_synthetic", "fig6_perturbations",
           "fig8_real_vs_synthetic",
           "fig9_noise", "central"]
