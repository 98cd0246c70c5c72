"""Targets and losses of the candidate generator (paper Section 3.1).

Blob heatmap: the CG ResUNet is trained to output 3D heatmaps where nodule centres are
"3D Gaussian blobs with the same sizes" (Section 3.1). The target is
    Y(p) = max_n exp(-|p - c_n|^2 / (2 sigma^2)),
with the centres c_n rounded to the nearest voxel so every nodule has exactly one voxel with
Y = 1 (sub-voxel precision, 0.625 mm, is far below the LUNA16 hit radius).

Loss choice: the heatmap is extremely sparse (a 128^3 crop holds ~1e2 blob voxels in 2e6),
so plain BCE/MSE is dominated by background. We use the penalty-reduced pixel-wise focal loss
of CornerNet/CenterNet (Law & Deng 2018; Zhou et al. 2019), alpha = 2, beta = 4:
    L = -1/N_pos * sum_p { (1 - P)^alpha log P                 if Y = 1
                         { (1 - Y)^beta P^alpha log(1 - P)      otherwise
with P = sigmoid(logit); N_pos = number of Y = 1 voxels (at least 1). Voxels near a centre
are penalised less for firing, so the blob shape need not be matched exactly; the
normalisation by N_pos makes the loss independent of the crop size.

Alternative (``c.cg.loss = "blob_bce"``): blob-weighted BCE against the soft target,
    L = sum_p w_p BCE(Y_p, P_p) / sum_p w_p,   w_p = 1 + lambda * Y_p,
whose minimum is P = Y (the network reproduces the blob). Every voxel of a blob, not only
its centre, gives a positive gradient, which is what a short training budget needs: on the
demo phantom the focal loss above had not left its background prior after 400 steps,
while blob BCE finds the nodules within the same budget.

RPN (Faster R-CNN [46], in 3D): anchors matched by IoU (nodulejax.models.boxes.match_anchors);
objectness by BCE on a random subset of anchors (at most `num_samples`, at most
`pos_fraction` positive, Bernoulli-sampled so it stays cheap and jittable over ~1e6 anchors)
plus smooth-L1 regression of the deltas of positive anchors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nodulejax.errors import ConfigError
from nodulejax.models import boxes as bx

# ----------------------------------------------------------------------------- heatmap


def heatmap_target(shape, centers_zyx, sigma_vox, valid=None, round_centers: bool = True):
    """Same-size Gaussian blob target (Section 3.1): (D, H, W) float32 in [0, 1].

    Args:
      shape: (D, H, W).
      centers_zyx: (N, 3) nodule centres in voxel-index coordinates (N may be 0).
      sigma_vox: blob std in voxels, scalar or (3,) (z, y, x): c.cg.blob_sigma_mm / spacing.
      valid: optional (N,) bool, to pad centres to a static N under jit.
      round_centers: round centres to the nearest voxel (peak value exactly 1; see module doc).
    Blobs combine by maximum. Separable, so memory is N (D + H + W) plus the output.
    """
    d, h, w = (int(s) for s in shape)
    c = jnp.asarray(centers_zyx, jnp.float32).reshape(-1, 3)
    if c.shape[0] == 0:
        return jnp.zeros((d, h, w), jnp.float32)
    if round_centers:
        c = jnp.round(c)
    sigma = jnp.broadcast_to(jnp.asarray(sigma_vox, jnp.float32), (3,))
    gz, gy, gx = (jnp.exp(-((jnp.arange(n, dtype=jnp.float32)[None, :] - c[:, i:i + 1]) ** 2)
                          / (2 * sigma[i] ** 2)) for i, n in enumerate((d, h, w)))
    if valid is not None:
        gz = gz * jnp.asarray(valid, jnp.float32)[:, None]
    blobs = gz[:, :, None, None] * gy[:, None, :, None] * gx[:, None, None, :]
    return jnp.max(blobs, axis=0)


def heatmap_focal_loss(logits, target, alpha: float = 2.0, beta: float = 4.0,
                       pos_threshold: float = 1.0 - 1e-4):
    """Penalty-reduced focal loss (CenterNet) per example; see module docstring.

    Args:
      logits: (B, D, H, W, 1) or (B, D, H, W) heatmap logits.
      target: same shape (or without the channel), values in [0, 1]; Y >= pos_threshold
        counts as a centre.
    Returns:
      (B,) loss, each example normalised by max(1, its number of centre voxels).
    """
    logits = jnp.asarray(logits, jnp.float32)
    target = jnp.asarray(target, jnp.float32).reshape(logits.shape)
    b = logits.shape[0]
    logits, target = logits.reshape(b, -1), target.reshape(b, -1)
    p = jax.nn.sigmoid(logits)
    log_p, log_1mp = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    pos = target >= pos_threshold
    pos_term = (1 - p) ** alpha * log_p
    neg_term = (1 - target) ** beta * p**alpha * log_1mp
    total = jnp.sum(jnp.where(pos, pos_term, neg_term), axis=1)
    n_pos = jnp.maximum(jnp.sum(pos, axis=1), 1)
    return -total / n_pos


def heatmap_blob_bce_loss(logits, target, pos_weight: float = 50.0):
    """Blob-weighted soft-label BCE per example (module docstring, ``c.cg.loss="blob_bce"``).

    Args:
      logits: (B, D, H, W, 1) or (B, D, H, W) heatmap logits.
      target: same shape (or without the channel), soft blob target in [0, 1].
      pos_weight: lambda; a voxel's weight is 1 + lambda * Y.
    Returns:
      (B,) weighted mean BCE (nats per unit weight).
    """
    logits = jnp.asarray(logits, jnp.float32)
    b = logits.shape[0]
    logits = logits.reshape(b, -1)
    target = jnp.asarray(target, jnp.float32).reshape(logits.shape)
    bce = -(target * jax.nn.log_sigmoid(logits) + (1 - target) * jax.nn.log_sigmoid(-logits))
    w = 1.0 + pos_weight * target
    return jnp.sum(w * bce, axis=1) / jnp.sum(w, axis=1)


def heatmap_loss(logits, target, kind: str = "focal", pos_weight: float = 50.0):
    """(B,) heatmap loss of ``kind``: "focal" (CenterNet) or "blob_bce"."""
    if kind == "focal":
        return heatmap_focal_loss(logits, target)
    if kind == "blob_bce":
        return heatmap_blob_bce_loss(logits, target, pos_weight)
    raise ConfigError(f"config.cg.loss={kind!r}: expected 'focal' or 'blob_bce'")


# ----------------------------------------------------------------------------- RPN


def smooth_l1(x, beta: float = 1.0 / 9.0):
    """Elementwise smooth L1 (Huber / beta): 0.5 x^2 / beta if |x| < beta else |x| - beta / 2."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * x**2 / beta, ax - 0.5 * beta)


def rpn_targets(anchors, gt_boxes, gt_valid=None, pos_iou: float = 0.5, neg_iou: float = 0.2):
    """Per-anchor training targets for a batch.

    Args:
      anchors: (N, 4); gt_boxes: (B, G, 4) cubes (z, y, x, d) in input voxels (pad G);
      gt_valid: (B, G) bool or None.
    Returns:
      labels (B, N) int32 in {-1 ignore, 0 negative, 1 positive}, target deltas (B, N, 4).
    """
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    if gt_valid is None:
        gt_valid = jnp.ones(gt_boxes.shape[:2], bool)

    def one(gt, valid):
        labels, matched = bx.match_anchors(anchors, gt, valid, pos_iou, neg_iou)
        return labels, bx.encode_boxes(gt[matched], anchors)

    return jax.vmap(one)(gt_boxes, jnp.asarray(gt_valid, bool))


def sample_anchors(key, labels, num_samples: int = 256, pos_fraction: float = 0.5):
    """Bernoulli anchor sampling: (B, N) labels -> (B, N) bool mask of anchors in the loss.

    Positives are kept with probability min(1, pos_fraction*num_samples / n_pos), negatives
    with min(1, (num_samples - expected positives) / n_neg): about `num_samples` anchors in
    expectation, at most `pos_fraction` of them positive; ignored anchors are never kept.
    """
    pos, neg = labels == 1, labels == 0
    n_pos = jnp.sum(pos, axis=1, keepdims=True).astype(jnp.float32)
    n_neg = jnp.sum(neg, axis=1, keepdims=True).astype(jnp.float32)
    want_pos = jnp.minimum(n_pos, pos_fraction * num_samples)
    p_pos = want_pos / jnp.maximum(n_pos, 1.0)
    p_neg = jnp.minimum(1.0, (num_samples - want_pos) / jnp.maximum(n_neg, 1.0))
    u = jax.random.uniform(key, labels.shape)
    return (pos & (u < p_pos)) | (neg & (u < p_neg))


def rpn_loss(objectness, deltas, labels, target_deltas, key, num_samples: int = 256,
             pos_fraction: float = 0.5, reg_weight: float = 1.0, beta: float = 1.0 / 9.0):
    """Faster R-CNN RPN loss per example (B,): sampled BCE objectness + smooth-L1 regression.

    L = 1/N_s sum_{sampled} BCE(o_i, [l_i = 1]) + reg_weight / max(1, N_pos)
        sum_{l_i = 1} sum_k smoothL1(t_ik - t*_ik)
    Args:
      objectness (B, N) logits; deltas (B, N, 4); labels (B, N) from `rpn_targets`;
      target_deltas (B, N, 4); key: PRNG key of the anchor sampling.
    """
    objectness = jnp.asarray(objectness, jnp.float32)
    labels = jnp.asarray(labels)
    sampled = sample_anchors(key, labels, num_samples, pos_fraction)
    y = (labels == 1).astype(jnp.float32)
    bce = -(y * jax.nn.log_sigmoid(objectness) + (1 - y) * jax.nn.log_sigmoid(-objectness))
    cls = jnp.sum(jnp.where(sampled, bce, 0.0), axis=1) / jnp.maximum(jnp.sum(sampled, 1), 1)
    pos = labels == 1
    reg = jnp.sum(smooth_l1(deltas - target_deltas, beta), axis=-1)
    reg = jnp.sum(jnp.where(pos, reg, 0.0), axis=1) / jnp.maximum(jnp.sum(pos, 1), 1)
    return cls + reg_weight * reg
