"""Scoring and attacking patch sets for the stress tests (Tables 4-6) and the figures.

Patches are ``(N, P, P, P)`` float32 in [0, 1] on the host; every function runs in fixed
batches (:func:`nodulejax.runtime.batching.map_batches`) so one compiled program serves all
calls of a batch size. The image attacks maximise the attacked FPR's own training loss
(:mod:`nodulejax.adversarial.attacks`, Eqs. 10-11 of the paper) with ``config.pgd``'s radii
unless ``eps`` / ``step_size`` are given (the robustness curves sweep the radius; the PGD
engine traces eps, step and steps, so a sweep does not recompile).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial import attacks
from nodulejax.models.classifier import FPRHandle
from nodulejax.runtime.batching import map_batches

__all__ = ["image_attack", "apply_noise"]


def image_attack(fpr: FPRHandle, x, keys, label: float, config, *, noise: bool = False,
                 eps=None, step_size=None) -> np.ndarray:
    """Image PGD on ``x`` (label 1: hide nodules; 0: make fire; ``c.pgd.image_*``) or, with
    ``noise=True``, adversarial noise (attack 3: uniform noise pushed to fire,
    ``c.pgd.noise_eps / noise_step / noise_steps``; ``x`` unused), one key per patch.
    ``eps`` / ``step_size`` override the config's radius and step (L-inf on [0, 1] unless
    ``c.pgd.image_norm`` says otherwise): scalars or one value per patch (N,), so patches of
    several radii share a batch (the engine takes (B,) radii; one executable either way).
    Returns (N, P, P, P) float32."""
    q = config.pgd
    kl = float(config.pool.get("kl_weight", 1.0))
    p = int(config.fpr.patch_size)
    if noise:
        e, st, n_steps = float(q.noise_eps), float(q.noise_step), int(q.noise_steps)
    else:
        e, st, n_steps = float(q.image_eps), float(q.image_step), int(q.image_steps)
    n = len(keys)
    e = np.broadcast_to(np.asarray(e if eps is None else eps, np.float32), (n,))
    st = np.broadcast_to(np.asarray(st if step_size is None else step_size, np.float32), (n,))

    def fn(k, eb, sb, *xb):
        kw = dict(head=fpr.head, kl_weight=kl, eps=jnp.asarray(eb), step_size=jnp.asarray(sb),
                  steps=n_steps, norm=str(q.image_norm))
        if noise:
            r = attacks.adversarial_noise(jnp.asarray(k), fpr.model, fpr.variables, len(k), p,
                                          **kw)
        else:
            r = attacks.perturb_patches(jnp.asarray(k), fpr.model, fpr.variables,
                                        jnp.asarray(xb[0], jnp.float32)[..., None], label, **kw)
        return {"x": np.asarray(r.x_adv)[..., 0]}

    arrays = (keys, e, st) if noise else (keys, e, st, x)
    return map_batches(fn, arrays, int(config.pgd.batch_size))["x"]


def apply_noise(fn, keys, x, level, bs):
    """``fn(keys, x[..., None], level)`` (a noise of :mod:`nodulejax.adversarial.noise`) over
    fixed batches of ``bs``; x (N, P, P, P) -> (N, P, P, P)."""
    return map_batches(lambda k, xb: {"x": np.asarray(fn(jnp.asarray(k), jnp.asarray(xb)[..., None],
                                                         level))[..., 0]}, (keys, x), bs)["x"]
