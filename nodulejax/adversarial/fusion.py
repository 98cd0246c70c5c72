"""Fusion of a synthetic nodule into a background CT patch (Section 3.2 of the paper).

``x~ (+) x = x~ * m + x * (1 - m)`` with ``m = [x~ > threshold]`` a binary mask obtained by
thresholding the synthetic patch (intensities in [0, 1]).

Gradients (what latent PGD differentiates through, ``z -> decoder -> fuse -> FPR``):

* ``surrogate_temperature=None`` (default): the mask is a constant (``stop_gradient`` of the
  hard threshold). This is the exact derivative of the hard-mask fusion almost everywhere:
  ``d out / d x~ = m``, ``d out / d x = 1 - m``. The gradient w.r.t. z flows through the
  synthetic voxels inside the mask; the mask itself moves between PGD steps through the
  forward pass. Non-zero as long as some synthetic voxel exceeds the threshold.
* ``surrogate_temperature=tau > 0``: straight-through estimator. Forward is still the hard
  mask; backward uses ``m_soft = sigmoid((x~ - threshold) / tau)``, so
  ``d out / d x~ = m + (x~ - x) * m_soft (1 - m_soft) / tau``: the attack can also grow or
  shrink the nodule boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fusion_mask(x_syn: jax.Array, threshold: float, surrogate_temperature: float | None = None):
    """Binary mask ``x_syn > threshold`` (same shape/dtype as ``x_syn``); see module doc."""
    hard = (x_syn > threshold).astype(x_syn.dtype)
    if surrogate_temperature is None:
        return jax.lax.stop_gradient(hard)
    soft = jax.nn.sigmoid((x_syn - threshold) / surrogate_temperature)
    return soft + jax.lax.stop_gradient(hard - soft)


def fuse(
    x_syn: jax.Array,
    background: jax.Array,
    threshold: float,
    *,
    surrogate_temperature: float | None = None,
) -> jax.Array:
    """Fuse synthetic nodules into backgrounds, Section 3.2.

    Args:
      x_syn: (B, P, P, P, 1) synthetic nodule patches in [0, 1] (``VAE.decode`` output).
      background: (B, P, P, P, 1) windowed CT patches in [0, 1], the same size as ``x_syn``
        (the synthetic patch is placed at the patch centre by the caller when sizes differ).
      threshold: mask threshold in [0, 1] intensity (``config.synth.mask_threshold``).
      surrogate_temperature: None -> constant mask gradient; tau -> straight-through sigmoid.
    Returns:
      (B, P, P, P, 1) ``x_syn * m + background * (1 - m)``.
    """
    if x_syn.shape != background.shape:
        raise ValueError(f"fuse: x_syn {x_syn.shape} and background {background.shape} differ")
    m = fusion_mask(x_syn, threshold, surrogate_temperature)
    return x_syn * m + background * (1.0 - m)


def paste_center(small: jax.Array, size: int, fill: float = 0.0) -> jax.Array:
    """Place (B, p, p, p, C) at the centre of a (B, size, size, size, C) array filled with
    ``fill`` (e.g. a 32^3 synthetic nodule into a 64^3 FPR patch before :func:`fuse`)."""
    p = small.shape[1]
    if p > size:
        raise ValueError(f"paste_center: patch {p} larger than target {size}")
    lo = (size - p) // 2
    pad = ((0, 0),) + ((lo, size - p - lo),) * 3 + ((0, 0),)
    return jnp.pad(small, pad, constant_values=fill)
