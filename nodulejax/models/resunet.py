"""3D residual U-Net candidate generator (paper Section 3.1, ref. [45] Zhang et al. 2018).

The CG backbone of the paper: a residual U-Net trained to output a one-channel heatmap of
nodule centres (same-size 3D Gaussian blobs, see `nodulejax.losses.detection`). The same
network, fine-tuned, gives the ground-glass model; with `nodulejax.models.rpn.RPNHead` on
its last decoder features it gives the 3D RPN (Table 2: "RPN" = backbone + head).

Architecture (channels last, NDHWC; Zhang et al.'s pre-activation residual units with
GroupNorm in place of BatchNorm so `apply` is pure, no mutable batch statistics):

    encoder level 0:  conv3(1->w0) -> GN-ReLU-conv3(w0->w0)        + conv1(1->w0) shortcut
    encoder level l:  GN-ReLU-conv3/2(w_{l-1}->w_l) -> GN-ReLU-conv3  + conv1/2 shortcut
    decoder level l:  nearest x2 upsample of level l+1, concat skip l,
                      GN-ReLU-conv3(->w_l) -> GN-ReLU-conv3           + conv1 shortcut
    head:             GN-ReLU-conv1(w0->1) -> heatmap logits

Widths: w_l = round(width * growth**l) for l = 0..depth-1 (depth = resolution levels), or
an explicit per-level tuple `widths` (configs/paper.py uses (16, 16, 20, 20) to match Table 2).
Upsampling is resize (nearest, by repetition) followed by plain convolutions, not a
transposed convolution (the transposed-conv gradient is slow in XLA, jax-ml/jax#31662).
All convolutions are `nodulejax.models.layers.Conv3D`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from nodulejax.errors import ConfigError
from nodulejax.models.layers import Conv3D, GroupNorm


def level_widths(width: int, depth: int, growth: float = 2.0) -> tuple[int, ...]:
    """Channels at each resolution level: round(width * growth**l), l = 0..depth-1."""
    return tuple(max(1, int(round(width * growth**level))) for level in range(depth))


def _groups(channels: int, max_groups: int = 8) -> int:
    """Largest group count <= max_groups that divides `channels` (GroupNorm groups)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def upsample_to(x, shape_dhw):
    """Nearest-neighbour x2 upsampling of (B, d, h, w, C), cropped to (B, *shape_dhw, C)."""
    b, d, h, w, c = x.shape
    fz, fy, fx = (math.ceil(t / s) for t, s in zip(shape_dhw, (d, h, w), strict=False))
    x = jnp.repeat(jnp.repeat(jnp.repeat(x, fz, axis=1), fy, axis=2), fx, axis=3)
    return x[:, : shape_dhw[0], : shape_dhw[1], : shape_dhw[2], :]


class GNReLU(nn.Module):
    """GroupNorm (no running statistics) followed by ReLU."""

    max_groups: int = 8

    @nn.compact
    def __call__(self, x):
        return nn.relu(GroupNorm(num_groups=_groups(x.shape[-1], self.max_groups))(x))


class ResBlock(nn.Module):
    """Pre-activation residual unit (Zhang et al. 2018, Fig. 1c): two 3x3x3 convolutions.

    `preact=False` is the input unit (the first conv sees the raw image). `strides` applies to
    the first conv and to the 1x1x1 projection shortcut. (B, D, H, W, Cin) -> (B, D/s, H/s,
    W/s, features).
    """

    features: int
    strides: int = 1
    preact: bool = True
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        h = GNReLU()(x) if self.preact else x
        h = Conv3D(self.features, 3, self.strides, impl=self.conv_impl)(h)
        h = GNReLU()(h)
        h = Conv3D(self.features, 3, 1, impl=self.conv_impl)(h)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = Conv3D(self.features, 1, self.strides, impl=self.conv_impl)(x)
        return x + h


class ResUNet3D(nn.Module):
    """Residual 3D U-Net with a one-channel nodule-centre heatmap head (Section 3.1).

    Attributes:
      width: channels at full resolution (w0).
      depth: number of resolution levels (>= 1); the input side should be divisible by
        2**(depth-1) for exact skip alignment (other sizes work, upsampling is cropped).
      conv_impl: lowering passed to every `Conv3D` ("auto" | "xla3d" | "2d").
      growth: channel multiplier per level (w_l = round(width * growth**l)).
      widths: explicit per-level channels; when non-empty it overrides width, depth, growth.
      head_prior: initial heatmap probability pi; the head bias starts at -log((1 - pi) / pi)
        (CenterNet / RetinaNet focal-loss prior: pi = 0.1 -> -2.197), so training does not
        begin with p = 0.5 on every voxel of a heatmap that is almost all background.

    `apply(vars, x)` with x (B, D, H, W, 1) in [0, 1] returns
      (heatmap logits (B, D, H, W, 1), features (B, D, H, W, w0)), the features being the
      last decoder level (before the head's normalisation), which the RPN head consumes.
    """

    width: int = 8
    depth: int = 4
    conv_impl: str = "auto"
    growth: float = 2.0
    widths: tuple[int, ...] = ()
    head_prior: float = 0.1

    @nn.compact
    def __call__(self, x):
        if x.ndim != 5:
            raise ValueError(f"ResUNet3D expects (B, D, H, W, C) input, got shape {x.shape}")
        widths = tuple(self.widths) or level_widths(self.width, self.depth, self.growth)
        skips = []
        h = ResBlock(widths[0], 1, preact=False, conv_impl=self.conv_impl, name="enc0")(x)
        for level in range(1, len(widths)):
            skips.append(h)
            h = ResBlock(widths[level], 2, conv_impl=self.conv_impl, name=f"enc{level}")(h)
        for level in range(len(widths) - 2, -1, -1):
            skip = skips[level]
            h = jnp.concatenate([upsample_to(h, skip.shape[1:4]), skip], axis=-1)
            h = ResBlock(widths[level], 1, conv_impl=self.conv_impl, name=f"dec{level}")(h)
        features = h
        prior = float(self.head_prior)
        logits = Conv3D(1, 1, 1, impl=self.conv_impl, name="head",
                        bias_init=-math.log((1.0 - prior) / prior))(GNReLU(name="head_norm")(h))
        return logits, features


def build_resunet(cg, conv_impl: str = "auto") -> ResUNet3D:
    """ResUNet3D from config block c.cg (width, depth, width_growth, widths, head_prior)."""
    prior = float(cg.get("head_prior", 0.1))
    if not 0.0 < prior < 1.0:
        raise ConfigError(f"config.cg.head_prior={prior}: must be a probability in (0, 1)")
    return ResUNet3D(width=int(cg.width), depth=int(cg.depth), conv_impl=conv_impl,
                     head_prior=prior,
                     growth=float(cg.get("width_growth", 2.0)),
                     widths=tuple(int(w) for w in cg.get("widths", ())))
