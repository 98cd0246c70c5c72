"""nodulejax.losses.segmentation: soft Dice + BCE of the DenseUNet segmentation pretraining."""

import jax.numpy as jnp
import numpy as np

from nodulejax.losses.segmentation import seg_loss


def test_seg_loss_is_lowest_for_the_right_mask():
    mask = np.zeros((2, 4, 4, 4, 1), bool)
    mask[:, 1:3, 1:3, 1:3] = True
    good = jnp.where(mask, 8.0, -8.0)
    bad = -good
    assert float(seg_loss(good, mask)) < 0.01 < float(seg_loss(jnp.zeros_like(good), mask))
    assert float(seg_loss(jnp.zeros_like(good), mask)) < float(seg_loss(bad, mask))
