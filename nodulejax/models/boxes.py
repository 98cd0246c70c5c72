"""3D cube boxes for the candidate generator (paper Section 3.1): anchors, IoU, box coding,
anchor matching, greedy 3D NMS, and heatmap peak finding.

Box convention: a cube box is (z, y, x, d) in voxel units of the CG input volume: the
centre in continuous voxel-index coordinates (voxel i's centre is at coordinate i, array order
(z, y, x)) and the side length d. Conversion to world millimetres lives in nodulejax.data.io
(CTVolume.voxel_to_world); heatmap peak suppression takes the voxel spacing to work in mm.

All functions are pure `jnp` and jittable with static sizes (`max_output`, `k`): variable
numbers of results are returned as fixed-size arrays plus a `valid` mask, padded with
index -1 / score -inf.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

# ----------------------------------------------------------------------------- anchors


def anchor_sizes_vox(anchors_mm, spacing_mm: float) -> np.ndarray:
    """Cube anchor sides in voxels: config c.cg.anchors_mm (mm) / isotropic spacing (mm)."""
    return np.asarray(anchors_mm, np.float32) / np.float32(spacing_mm)


def make_anchors(feature_shape, stride: int, sizes_vox) -> jnp.ndarray:
    """Cube anchors at every location of a feature map of stride `stride`.

    Args:
      feature_shape: (d, h, w) of the feature map.
      stride: input voxels per feature voxel (1 = full resolution).
      sizes_vox: (A,) anchor sides in input voxels.

    Returns:
      (d*h*w*A, 4) float32 boxes (z, y, x, side), ordered (z, y, x, anchor) -- the order in
      which `nodulejax.models.rpn.RPNHead` flattens its outputs. Feature voxel j covers input
      voxels [j*stride, (j+1)*stride - 1]; its anchors are centred at j*stride + (stride-1)/2.
    """
    sizes = jnp.asarray(sizes_vox, jnp.float32)
    axes = [jnp.arange(n, dtype=jnp.float32) * stride + (stride - 1) / 2.0 for n in feature_shape]
    zz, yy, xx = jnp.meshgrid(*axes, indexing="ij")
    centres = jnp.stack([zz, yy, xx], -1).reshape(-1, 1, 3)
    n, a = centres.shape[0], sizes.shape[0]
    centres = jnp.broadcast_to(centres, (n, a, 3))
    side = jnp.broadcast_to(sizes[None, :, None], (n, a, 1))
    return jnp.concatenate([centres, side], -1).reshape(n * a, 4)


# ----------------------------------------------------------------------------- IoU


def box_iou(a, b) -> jnp.ndarray:
    """Pairwise 3D IoU of cube boxes: a (N, 4), b (M, 4) as (z, y, x, d) -> (N, M) in [0, 1].

    IoU = |A n B| / (d_a^3 + d_b^3 - |A n B|), the intersection being the product of the three
    per-axis overlaps max(0, min(hi_a, hi_b) - max(lo_a, lo_b)).
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    ca, da = a[:, None, :3], a[:, None, 3:4]
    cb, db = b[None, :, :3], b[None, :, 3:4]
    lo = jnp.maximum(ca - da / 2, cb - db / 2)
    hi = jnp.minimum(ca + da / 2, cb + db / 2)
    inter = jnp.prod(jnp.clip(hi - lo, 0.0), axis=-1)
    union = a[:, None, 3] ** 3 + b[None, :, 3] ** 3 - inter
    return inter / jnp.maximum(union, 1e-12)


# ----------------------------------------------------------------------------- box coding


def encode_boxes(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)) -> jnp.ndarray:
    """Faster R-CNN box coding in 3D (ref. [46]): boxes, anchors (..., 4) -> deltas (..., 4).

    t_z = w0 (z - z_a) / d_a,  t_y = w1 (y - y_a) / d_a,  t_x = w2 (x - x_a) / d_a,
    t_d = w3 log(d / d_a).
    """
    boxes, anchors = jnp.asarray(boxes, jnp.float32), jnp.asarray(anchors, jnp.float32)
    w = jnp.asarray(weights, jnp.float32)
    da = anchors[..., 3:4]
    t_c = (boxes[..., :3] - anchors[..., :3]) / da
    t_d = jnp.log(jnp.maximum(boxes[..., 3:4], 1e-6) / da)
    return jnp.concatenate([t_c, t_d], -1) * w


def decode_boxes(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0), max_log_d=4.0) -> jnp.ndarray:
    """Inverse of `encode_boxes`: deltas, anchors (..., 4) -> boxes (..., 4).

    t_d is clipped to `max_log_d` (exp(4) = 55x the anchor) so untrained heads stay finite.
    """
    deltas, anchors = jnp.asarray(deltas, jnp.float32), jnp.asarray(anchors, jnp.float32)
    t = deltas / jnp.asarray(weights, jnp.float32)
    da = anchors[..., 3:4]
    centre = anchors[..., :3] + t[..., :3] * da
    side = da * jnp.exp(jnp.minimum(t[..., 3:4], max_log_d))
    return jnp.concatenate([centre, side], -1)


# ----------------------------------------------------------------------------- matching


def match_anchors(anchors, gt_boxes, gt_valid=None, pos_iou: float = 0.5, neg_iou: float = 0.2):
    """Assign anchors to ground-truth cubes by 3D IoU (Faster R-CNN RPN rule, ref. [46]).

    An anchor is positive (1) when its best IoU with a valid GT is >= pos_iou, negative (0)
    when it is < neg_iou, ignored (-1) in between. Every valid GT additionally gets its
    best-IoU anchor(s) as positives (ties included, IoU > 0), so small nodules that no anchor
    overlaps by pos_iou still train the head.

    Args:
      anchors: (N, 4); gt_boxes: (G, 4) (padded); gt_valid: (G,) bool or None (all valid).
    Returns:
      labels (N,) int32 in {-1, 0, 1}; matched (N,) int32 index of the assigned GT (for
      positives; the best-IoU GT otherwise, 0 when there is no valid GT).
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32).reshape(-1, 4)
    g = gt_boxes.shape[0]
    if g == 0:
        n = anchors.shape[0]
        return jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.int32)
    valid = jnp.ones((g,), bool) if gt_valid is None else jnp.asarray(gt_valid, bool)
    iou = jnp.where(valid[None, :], box_iou(anchors, gt_boxes), -1.0)  # (N, G)
    matched = jnp.argmax(iou, axis=1).astype(jnp.int32)
    best = jnp.max(iou, axis=1)
    labels = jnp.where(best >= pos_iou, 1, jnp.where(best < neg_iou, 0, -1)).astype(jnp.int32)
    # each valid GT's best anchor(s)
    gt_best = jnp.max(iou, axis=0)  # (G,)
    is_best = (iou == gt_best[None, :]) & valid[None, :] & (gt_best[None, :] > 0)
    force = jnp.any(is_best, axis=1)
    forced_gt = jnp.argmax(is_best, axis=1).astype(jnp.int32)
    labels = jnp.where(force, 1, labels)
    matched = jnp.where(force & (best < pos_iou), forced_gt, matched)
    return labels, matched


# ----------------------------------------------------------------------------- NMS


def _greedy_keep(suppress, valid):
    """Greedy NMS on score-sorted items: suppress (M, M) bool, valid (M,) -> keep (M,)."""
    m = valid.shape[0]
    idx = jnp.arange(m)

    def body(i, keep):
        earlier_kept = keep & (idx < i)
        ok = valid[i] & ~jnp.any(earlier_kept & suppress[:, i])
        return keep.at[i].set(ok)

    return lax.fori_loop(0, m, body, jnp.zeros((m,), bool))


def _nms(suppress_fn, items, scores, max_output, pre_nms_top_n, valid):
    scores = jnp.asarray(scores, jnp.float32).reshape(-1)
    n = scores.shape[0]
    if valid is not None:
        scores = jnp.where(jnp.asarray(valid, bool), scores, -jnp.inf)
    m = n if pre_nms_top_n is None else min(int(pre_nms_top_n), n)
    top_scores, order = lax.top_k(scores, m)  # sorted descending
    cand = jnp.asarray(items)[order]
    ok = top_scores > -jnp.inf
    keep = _greedy_keep(suppress_fn(cand), ok)
    # first max_output kept items in score order
    rank = jnp.where(keep, jnp.arange(m), m + jnp.arange(m))
    k = min(int(max_output), m)
    sel = jnp.argsort(rank)[:k]
    kept = keep[sel]
    out_idx = jnp.where(kept, order[sel], -1).astype(jnp.int32)
    out_scores = jnp.where(kept, top_scores[sel], -jnp.inf)
    if k < max_output:  # pad to the requested static size
        pad = int(max_output) - k
        out_idx = jnp.concatenate([out_idx, -jnp.ones((pad,), jnp.int32)])
        out_scores = jnp.concatenate([out_scores, jnp.full((pad,), -jnp.inf)])
        kept = jnp.concatenate([kept, jnp.zeros((pad,), bool)])
    return out_idx, out_scores, kept


def nms_boxes(boxes, scores, iou_threshold: float, max_output: int, pre_nms_top_n=None,
              valid=None):
    """Greedy 3D NMS by IoU: keep the best box, drop boxes with IoU > iou_threshold to it, repeat.

    Args:
      boxes: (N, 4) cubes (z, y, x, d); scores: (N,); valid: optional (N,) bool mask.
      max_output: K, the most boxes returned (static); pre_nms_top_n: only the top-scoring
        this-many boxes enter the O(M^2) suppression (static; None = all).
    Returns:
      idx (K,) int32 indices into `boxes` in descending score order (-1 = empty slot),
      scores (K,) (-inf for empty), valid (K,) bool.
    """
    return _nms(lambda b: box_iou(b, b) > iou_threshold, boxes, scores, max_output,
                pre_nms_top_n, valid)


def nms_points(points, scores, radius: float, max_output: int, pre_nms_top_n=None, valid=None):
    """Greedy NMS by distance: a point within `radius` of a kept higher-scoring point is dropped.

    points (N, 3) in any consistent unit (pass mm: voxel zyx * spacing); same returns as
    `nms_boxes`.
    """

    def suppress(p):
        p = jnp.asarray(p, jnp.float32)
        d2 = jnp.sum((p[:, None, :] - p[None, :, :]) ** 2, axis=-1)
        return d2 < radius**2

    return _nms(suppress, points, scores, max_output, pre_nms_top_n, valid)


# ----------------------------------------------------------------------------- heatmap peaks


def local_maxima(heatmap, size: int = 3) -> jnp.ndarray:
    """Voxels equal to the max of their size^3 neighbourhood: (D, H, W) -> bool (D, H, W)."""
    h = jnp.asarray(heatmap)
    pooled = lax.reduce_window(h, -jnp.inf, lax.max, (size,) * 3, (1, 1, 1), "SAME")
    return h >= pooled


def heatmap_peaks(heatmap, k: int, spacing_mm=1.0, radius_mm: float = 5.0,
                  pre_k: int | None = None, min_score: float = -jnp.inf, pool_size: int = 3):
    """Candidates from a CG heatmap (Section 3.1): local maxima, top-K, distance NMS in mm.

    Args:
      heatmap: (D, H, W) scores (probabilities or logits; only their order matters).
      k: most peaks returned (paper: 100 candidates per scan, static).
      spacing_mm: scalar or (3,) (z, y, x) voxel spacing, used to suppress in millimetres.
      radius_mm: peaks closer than this to a higher one are dropped.
      pre_k: local maxima entering NMS (default 4 k; static).
      min_score: peaks at or below this are dropped.
    Returns:
      zyx (k, 3) int32 voxel indices, scores (k,) (-inf for empty slots), valid (k,) bool;
      sorted by descending score.
    """
    h = jnp.asarray(heatmap, jnp.float32)
    is_peak = local_maxima(h, pool_size) & (h > min_score)
    flat = jnp.where(is_peak, h, -jnp.inf).reshape(-1)
    pre_k = min(int(pre_k or 4 * k), flat.shape[0])
    top_scores, top_idx = lax.top_k(flat, pre_k)
    zyx = jnp.stack(jnp.unravel_index(top_idx, h.shape), -1).astype(jnp.int32)
    spacing = jnp.broadcast_to(jnp.asarray(spacing_mm, jnp.float32), (3,))
    idx, scores, valid = nms_points(zyx * spacing, top_scores, radius_mm, k,
                                    valid=top_scores > -jnp.inf)
    out = jnp.where(valid[:, None], zyx[jnp.maximum(idx, 0)], -1)
    return out, scores, valid


__all__ = [
    "anchor_sizes_vox", "make_anchors", "box_iou", "encode_boxes", "decode_boxes",
    "match_anchors", "nms_boxes", "nms_points", "local_maxima", "heatmap_peaks",
]
