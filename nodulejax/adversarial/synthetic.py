"""Synthetic nodules with the diameter filter (Sections 3.2 and 5.3.1).

"We ensured that all the synthetic nodules in this test have diameters at least 6mm" and the
limitations ("not constrained to maintain the size ... we had to filter out the synthetic
nodules that are smaller than the relevant threshold"): :func:`synthesize_filtered` draws, per
item, up to ``c.pool.max_tries`` latent codes and keeps the first whose decoded nodule
reaches ``min_diameter_mm``, then fuses it (and, with ``search``, its PGD-searched code) into
a background patch (:func:`nodulejax.adversarial.attacks.synthesize_nodules`).

The nodule's diameter is the equivalent-sphere diameter of its fusion mask
(:func:`nodule_diameter_mm`) minus ``c.synth.diameter_rim_mm``: the synthesizer learns the
training cut-outs, whose boundary is blurred outwards by a distance transform (Section 3.2),
so the mask includes a rim that an annotated diameter does not. The rim is measured on the
cut-outs (``train.synth.synth_quality``: ``mask diameter = slope x annotated + offset``);
the default 0 keeps the mask diameter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial import attacks
from nodulejax.errors import ConfigError, NoduleJaxError
from nodulejax.models.classifier import FPRHandle, GenHandle

__all__ = ["synthesize_filtered", "nodule_diameter_mm", "diameter_ok", "diameter_of_voxels",
           "filter_diameter_mm"]


@jax.jit
def _z_of(keys, dummy_latent):
    """Prior codes of attacks.synthesize_nodules for per-example keys: normal(split(k)[0])."""
    k_z = jax.vmap(lambda k: jax.random.split(k, 2)[0])(keys)
    return jax.vmap(lambda k: jax.random.normal(k, dummy_latent.shape))(k_z)


_DECODE_CACHE: dict = {}


def _voxels_fn(generator):
    if generator not in _DECODE_CACHE:
        def f(gen_vars, z, threshold):
            nod = generator.apply(gen_vars, z, method="decode")
            return jnp.sum(nod > threshold, axis=tuple(range(1, nod.ndim)))
        _DECODE_CACHE[generator] = jax.jit(f)
    return _DECODE_CACHE[generator]


def diameter_of_voxels(voxels, spacing) -> np.ndarray:
    """Equivalent-sphere diameter (mm) of ``voxels`` voxel counts: ``(6 V / pi)^(1/3)``,
    V = voxels * voxel volume; ``spacing`` (z, y, x) mm or a scalar (isotropic)."""
    vol = np.asarray(voxels, np.float64) * float(
        np.prod(np.broadcast_to(np.asarray(spacing, np.float64), (3,))))
    return np.cbrt(6.0 * vol / np.pi)


def synthesize_filtered(keys, fpr: FPRHandle, gen: GenHandle, backgrounds, config, *,
                        search: bool, min_diameter_mm: float | None = None) -> dict:
    """Synthetic nodules of Section 3.2 with the diameter filter of Section 5.3.1.

    For each item key ``k``, the latent draws of the keys ``fold_in(k, t)``, t < c.pool.max_tries,
    are decoded and the first whose nodule reaches ``min_diameter_mm`` (default
    ``c.synth.min_diameter_mm``) is used
    (``attacks.synthesize_nodules`` with that key; with ``search`` the code is PGD-searched
    against ``fpr``). keys (B, 2) uint32, backgrounds (B, P, P, P) in [0, 1].

    Returns numpy arrays: ``x_random``/``x_pgd`` (B, P, P, P), ``prob_random``/``prob_pgd``,
    ``diam_random``/``diam_pgd`` (mm, mask diameter minus ``c.synth.diameter_rim_mm``),
    ``ok_random``/``ok_pgd`` (diameter >= min), ``tries``
    (index of the draw used), ``key`` (B, 2) the key passed to synthesize_nodules."""
    c = config
    thr = float(c.synth.mask_threshold)
    dmin = float(c.synth.min_diameter_mm if min_diameter_mm is None else min_diameter_mm)
    tries = max(int(c.pool.get("max_tries", 1)), 1)
    keys = jnp.asarray(keys)
    b = keys.shape[0]
    latent = jnp.zeros((int(gen.model.latent_dim),), jnp.float32)
    cand = jax.vmap(lambda k: jax.vmap(lambda t: jax.random.fold_in(k, t))(
        jnp.arange(tries, dtype=jnp.uint32)))(keys)  # (B, T, 2)
    flat = cand.reshape((b * tries,) + cand.shape[2:])
    z = _z_of(flat, latent)
    vox = np.asarray(_voxels_fn(gen.model)(gen.variables, z, jnp.float32(thr))).reshape(b, tries)
    ok = filter_diameter_mm(vox, c) >= dmin
    t_used = np.where(ok.any(1), np.argmax(ok, 1), 0)
    chosen = cand[jnp.arange(b), jnp.asarray(t_used)]
    bg = jnp.asarray(backgrounds, jnp.float32)[..., None]
    q = c.pgd
    r = attacks.synthesize_nodules(
        chosen, fpr.model, fpr.variables, gen.model, gen.variables, bg, head=fpr.head,
        threshold=thr, kl_weight=float(c.pool.get("kl_weight", 1.0)), eps=float(q.latent_eps),
        step_size=float(q.latent_step), steps=int(q.latent_steps), norm=str(q.latent_norm),
        search=search)
    z_used = np.asarray(z).reshape(b, tries, -1)[np.arange(b), t_used]
    if not np.allclose(np.asarray(r.z), z_used, atol=1e-6):
        raise NoduleJaxError("pool: attacks.synthesize_nodules no longer derives z as "
                             "normal(split(key)[0]); update nodulejax.adversarial.synthetic._z_of")
    d_r = filter_diameter_mm(_mask_voxels(r.nodule_random, thr), c)
    d_p = filter_diameter_mm(_mask_voxels(r.nodule_pgd, thr), c)
    return {"x_random": np.asarray(r.x_random)[..., 0], "x_pgd": np.asarray(r.x_pgd)[..., 0],
            "prob_random": np.asarray(r.prob_random), "prob_pgd": np.asarray(r.prob_pgd),
            "nod_random": np.asarray(r.nodule_random)[..., 0],
            "nod_pgd": np.asarray(r.nodule_pgd)[..., 0],
            "diam_random": d_r, "diam_pgd": d_p, "ok_random": d_r >= dmin, "ok_pgd": d_p >= dmin,
            "tries": t_used.astype(np.int32), "key": np.asarray(chosen)}


def filter_diameter_mm(voxels, config) -> np.ndarray:
    """The diameter the filters compare with ``min_diameter_mm``: the equivalent-sphere
    diameter of ``voxels`` fusion-mask voxel counts at ``c.data.spacing``, minus the blurred
    rim ``c.synth.diameter_rim_mm`` (module doc)."""
    rim = float(config.synth.get("diameter_rim_mm", 0.0))
    if not (np.isfinite(rim) and rim >= 0):
        raise ConfigError(f"config.synth.diameter_rim_mm: expected a finite number >= 0 (mm of "
                          f"blurred rim), got {rim}")
    return diameter_of_voxels(voxels, float(config.data.spacing)) - rim


def _mask_voxels(nodules, threshold: float) -> np.ndarray:
    a = np.asarray(nodules)
    return np.sum((a[..., 0] if a.ndim == 5 else a) > threshold, axis=(1, 2, 3))


def nodule_diameter_mm(nodules, threshold: float, spacing) -> np.ndarray:
    """Equivalent-sphere diameter (mm) of each synthetic nodule: ``(6 V / pi)^(1/3)`` with V the
    volume of the voxels above ``threshold`` (the fusion mask); ``spacing`` (z, y, x) mm or a
    scalar. nodules (B, p, p, p[, 1]) -> (B,) float64."""
    return diameter_of_voxels(_mask_voxels(nodules, threshold), spacing)


def diameter_ok(nodules, threshold: float, spacing, min_diameter_mm: float) -> np.ndarray:
    """Boolean (B,) keep-mask: diameter >= min_diameter_mm (paper: 6 mm, Section 5.3.1)."""
    return nodule_diameter_mm(nodules, threshold, spacing) >= min_diameter_mm

