"""Loss of the DenseUNet segmentation pretraining (Section 3.1: "pre-trained with nodule
segmentation"): soft Dice + BCE on the nodule masks of ``data.patchsets.seg_patches``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nodulejax.losses.fpr import bce_loss

__all__ = ["seg_loss"]

def seg_loss(logits, mask):
    """Soft Dice + BCE (per example mean), logits/mask (B, P, P, P, 1) -> scalar."""
    m = mask.astype(logits.dtype)
    bce = jnp.mean(bce_loss(logits, m))
    p = jax.nn.sigmoid(logits)
    ax = tuple(range(1, logits.ndim))
    dice = (2 * jnp.sum(p * m, ax) + 1.0) / (jnp.sum(p, ax) + jnp.sum(m, ax) + 1.0)
    return bce + jnp.mean(1.0 - dice)

