"""3D region proposal network on the ResUNet features (paper Section 3.1, "3D RPN Head", [46]).

The paper fine-tunes the first CG network by adding a Faster R-CNN style RPN head; Table 2's
"RPN" row (276.93k parameters, 113.91 GMACs at 128^3) is read here as backbone + head: the
ResUNet alone is 143.92k, so the head holds the other ~133k.

Head (channels last):
    features (B, D, H, W, w0)  -- last decoder level of ResUNet3D
    -> conv3, stride s (w0 -> R) -> GN-ReLU -> conv3 (R -> R) -> GN-ReLU
    -> conv1 (R -> A)       objectness logits
    -> conv1 (R -> 4A)      deltas (t_z, t_y, t_x, t_d) per anchor (nodulejax.models.boxes coding)
Outputs are flattened in (z, y, x, anchor) order to match `nodulejax.models.boxes.make_anchors`
with the same stride s and the anchor sides c.cg.anchors_mm / spacing.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nodulejax.models import boxes as bx
from nodulejax.models.layers import Conv3D
from nodulejax.models.resunet import GNReLU, ResUNet3D


class RPNHead(nn.Module):
    """Objectness and box-delta head: features (B, D, H, W, C) ->
    (objectness logits (B, N*A), deltas (B, N*A, 4)), N = (D/s)(H/s)(W/s)."""

    num_anchors: int
    width: int = 64
    stride: int = 2
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, features):
        h = Conv3D(self.width, 3, self.stride, impl=self.conv_impl)(features)
        h = GNReLU()(h)
        h = Conv3D(self.width, 3, 1, impl=self.conv_impl)(h)
        h = GNReLU()(h)
        a = self.num_anchors
        obj = Conv3D(a, 1, 1, impl=self.conv_impl, name="objectness")(h)
        deltas = Conv3D(4 * a, 1, 1, impl=self.conv_impl, name="deltas")(h)
        b = obj.shape[0]
        return obj.reshape(b, -1), deltas.reshape(b, -1, 4)


class ResUNetRPN(nn.Module):
    """ResUNet3D backbone + RPN head (Table 2 "RPN").

    `apply(vars, x)` with x (B, D, H, W, 1) returns a dict:
      heatmap: (B, D, H, W, 1) blob logits of the backbone head,
      objectness: (B, N*A) logits, deltas: (B, N*A, 4).
    `feature_shape(input_shape)` gives the (d, h, w) the anchors must be laid on.
    """

    width: int = 8
    depth: int = 4
    num_anchors: int = 4
    rpn_width: int = 64
    rpn_stride: int = 2
    conv_impl: str = "auto"
    growth: float = 2.0
    widths: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, x):
        logits, feats = ResUNet3D(self.width, self.depth, self.conv_impl, self.growth,
                                  tuple(self.widths), name="backbone")(x)
        obj, deltas = RPNHead(self.num_anchors, self.rpn_width, self.rpn_stride,
                              self.conv_impl, name="rpn")(feats)
        return {"heatmap": logits, "objectness": obj, "deltas": deltas}

    def feature_shape(self, input_dhw):
        """(d, h, w) of the head's grid for an input of spatial shape input_dhw ('SAME')."""
        s = self.rpn_stride
        return tuple(-(-int(n) // s) for n in input_dhw)


def anchors_for(model: ResUNetRPN, input_dhw, anchors_mm, spacing_mm: float):
    """The (N*A, 4) anchors matching `model`'s output order for an input of shape input_dhw."""
    sizes = bx.anchor_sizes_vox(anchors_mm, spacing_mm)
    if len(sizes) != model.num_anchors:
        raise ValueError(f"model has {model.num_anchors} anchors per location, "
                         f"anchors_mm lists {len(sizes)}")
    return bx.make_anchors(model.feature_shape(input_dhw), model.rpn_stride, sizes)


def rpn_proposals(objectness, deltas, anchors, max_output: int = 100,
                  iou_threshold: float = 0.1, pre_nms_top_n: int = 2000):
    """Decode one volume's RPN outputs into at most K boxes (Section 3.1 candidates).

    Args:
      objectness (N*A,) logits; deltas (N*A, 4); anchors (N*A, 4) (same order).
    Returns:
      boxes (K, 4) (z, y, x, d) in input voxels, scores (K,) probabilities (0 for empty
      slots), valid (K,) bool; sorted by descending score.
    """
    decoded = bx.decode_boxes(deltas, anchors)
    idx, _, valid = bx.nms_boxes(decoded, objectness, iou_threshold, max_output,
                                 pre_nms_top_n=pre_nms_top_n)
    safe = jnp.maximum(idx, 0)
    boxes = jnp.where(valid[:, None], decoded[safe], 0.0)
    scores = jnp.where(valid, jax.nn.sigmoid(objectness[safe]), 0.0)
    return boxes, scores, valid


def build_rpn(cg, conv_impl: str = "auto") -> ResUNetRPN:
    """ResUNetRPN from config block c.cg (backbone fields + anchors_mm, rpn_width, rpn_stride)."""
    return ResUNetRPN(width=int(cg.width), depth=int(cg.depth),
                      num_anchors=len(tuple(cg.anchors_mm)), rpn_width=int(cg.rpn_width),
                      rpn_stride=int(cg.get("rpn_stride", 2)), conv_impl=conv_impl,
                      growth=float(cg.get("width_growth", 2.0)),
                      widths=tuple(int(w) for w in cg.get("widths", ())))
