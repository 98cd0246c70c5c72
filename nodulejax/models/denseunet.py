"""DenseUNet3D: the false-positive-reduction network of Section 3.1 (Table 2 "FPR").

A dense-block U-Net (Huang et al. DenseNet blocks in a U-Net encoder-decoder), pre-trained
for nodule segmentation (``task="seg"``) and then used with a shallow classifier head on
64^3 patches (``task="cls"``).

Layout (channels last, (B, D, H, W, C), D = H = W = P, P divisible by 2^(levels-1))::

    stem:     Conv3D(init_features, 3) -> GN -> ReLU                       at P^3
    encoder:  level i = 0 .. n-1 (n = len(block_layers)), resolution P / 2^i:
                DenseBlock(block_layers[i] layers, growth[i])  (GN-ReLU-Conv3D(growth,3), concat)
                level < n-1: skip_i = output;  TransitionDown = GN-ReLU-Conv1x1(compression*C)
                             -> 2x max pool
    decoder:  level i = n-2 .. 0:  up: GN-ReLU-Conv1x1(C_skip_i) at low resolution -> nearest
                (or trilinear) 2x resize (up_mode "nearest"/"trilinear"; "resize_conv" /
                "shuffle" use layers.UpConv3D, a 3x3x3 conv at the high resolution, ~8x the
                MACs); never a transposed conv (slow gradient in XLA) -> concat skip_i
                -> DenseBlock(block_layers[i], growth[i]) -> GN-ReLU-Conv1x1(C_skip_i)
    seg head: Conv3D(1, 1) on the last decoder features -> logits (B, P, P, P, 1)
    cls head: concat(global-avg-pool(bottleneck), global-avg-pool(decoder output))
                -> Dense(cls_hidden) -> ReLU -> Dense(1) logit   (head="ce")
                                              -> Dense(2) -> softplus = evidence (e+, e-) >= 0
                                                                              (head="beta")

Normalisation is GroupNorm (per example, no running statistics): ``apply`` is a pure
function with no ``batch_stats`` collection, train and eval behave the same, and an example's
output (and so its PGD attack) does not depend on the rest of the batch. The paper points at
batch normalisation as one cause of adversarial vulnerability; GroupNorm avoids it.
``norm_groups`` is the largest divisor of the channel count not above the configured value.

Paper size (configs/default.py ``c.fpr``): init_features 28, growth 14 at every level, block_layers
(1, 2, 3, 3), compression 0.5, cls_hidden 32 -> 450.1k parameters (Table 2: 455.98k) and
17.17 GMACs at 64^3 (Table 2: 17.24 G) by the exact per-layer count of
``layers.count_macs`` (convs + dense layers); XLA's cost analysis gives ~1.7% fewer because
it skips the SAME-padding zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nodulejax.errors import ConfigError
from nodulejax.models.layers import (
    Conv3D,
    GroupNorm,
    UpConv3D,
    global_avg_pool3d,
    max_pool3d,
    upsample3d,
)


def group_norm(channels: int, max_groups: int, name: str | None = None) -> GroupNorm:
    """GroupNorm (``layers.GroupNorm``, the same function as flax's) with the largest group
    count <= max_groups that divides ``channels``."""
    g = max(d for d in range(1, max(1, min(max_groups, channels)) + 1) if channels % d == 0)
    return GroupNorm(num_groups=g, epsilon=1e-5, name=name)


class NormActConv(nn.Module):
    """GN -> ReLU -> Conv3D(features, kernel_size) (pre-activation, DenseNet order)."""

    features: int
    kernel_size: int = 3
    norm_groups: int = 4
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        x = nn.relu(group_norm(x.shape[-1], self.norm_groups)(x))
        return Conv3D(self.features, self.kernel_size, impl=self.conv_impl)(x)


class DenseBlock(nn.Module):
    """``layers`` x [GN-ReLU-Conv3D(growth, 3)], each output concatenated to its input.

    (B, ..., C) -> (B, ..., C + layers * growth).
    """

    layers: int
    growth: int
    norm_groups: int = 4
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            y = NormActConv(self.growth, 3, self.norm_groups, self.conv_impl)(x)
            x = jnp.concatenate([x, y], axis=-1)
        return x


class DenseUNet3D(nn.Module):
    """Dense U-Net for nodule segmentation and FPR classification (Section 3.1).

    Attributes:
      init_features: stem width.
      growth: dense growth rate, one int or one per level.
      block_layers: conv layers per dense block, one per resolution level (the last one is
        the bottleneck); len(block_layers) = number of levels.
      compression: channel factor of the down transitions (DenseNet-BC theta).
      cls_hidden: width of the shallow classifier's hidden layer.
      head: "ce" (one logit) or "beta" (two evidences via softplus).
      norm_groups: maximum GroupNorm group count.
      up_mode: "nearest" | "trilinear" (1x1 conv then resize) | "resize_conv" | "shuffle"
        (layers.UpConv3D).
      conv_impl: Conv3D lowering ("auto" | "xla3d" | "2d" | "2dcat").

    ``apply(variables, x, task="cls")``: x (B, P, P, P, 1) in [0, 1] -> "ce": logits (B,);
    "beta": evidence (B, 2) >= 0 (column 0 = nodule). ``task="seg"``: logits (B, P, P, P, 1).
    """

    init_features: int = 16
    growth: int | Sequence[int] = 12
    block_layers: Sequence[int] = (2, 2, 2)
    compression: float = 1.0
    cls_hidden: int = 32
    head: str = "beta"
    norm_groups: int = 4
    up_mode: str = "nearest"
    conv_impl: str = "auto"

    def _growth(self, i: int) -> int:
        g = self.growth
        return int(g) if isinstance(g, int) else int(tuple(g)[i])

    @nn.compact
    def __call__(self, x, task: str = "cls"):
        if task not in ("cls", "seg"):
            raise ConfigError(f"DenseUNet3D task={task!r}: expected 'cls' or 'seg'")
        if self.head not in ("ce", "beta"):
            raise ConfigError(f"config.fpr.head={self.head!r}: expected 'ce' or 'beta'")
        n = len(self.block_layers)
        if any(s % 2 ** (n - 1) for s in x.shape[1:4]):
            raise ConfigError(
                f"DenseUNet3D: patch {x.shape[1:4]} not divisible by 2^{n - 1} (block_layers)"
            )
        kw = dict(norm_groups=self.norm_groups, conv_impl=self.conv_impl)
        h = Conv3D(self.init_features, 3, impl=self.conv_impl, name="stem")(x)
        skips = []
        for i in range(n):
            h = DenseBlock(self.block_layers[i], self._growth(i), name=f"enc{i}", **kw)(h)
            if i < n - 1:
                skips.append(h)
                c = max(1, int(round(h.shape[-1] * self.compression)))
                h = NormActConv(c, 1, name=f"down{i}", **kw)(h)
                h = max_pool3d(h, 2)
        bottleneck = h
        for i in range(n - 2, -1, -1):
            c_skip = skips[i].shape[-1]
            if self.up_mode in ("nearest", "trilinear"):  # 1x1 conv at low res, then resize
                h = NormActConv(c_skip, 1, name=f"up{i}", **kw)(h)
                h = upsample3d(h, 2, self.up_mode)
            else:  # "resize_conv" / "shuffle": layers.UpConv3D (3x3x3 conv at high res)
                mode = "nearest" if self.up_mode == "resize_conv" else self.up_mode
                h = UpConv3D(c_skip, 2, mode, impl=self.conv_impl, name=f"up{i}")(h)
            h = jnp.concatenate([h, skips[i]], axis=-1)
            h = DenseBlock(self.block_layers[i], self._growth(i), name=f"dec{i}", **kw)(h)
            h = NormActConv(c_skip, 1, name=f"fuse{i}", **kw)(h)
        h = nn.relu(group_norm(h.shape[-1], self.norm_groups, name="out_norm")(h))
        # init creates both heads whatever ``task`` is, so one parameter tree serves the
        # segmentation pretraining and the classifier fine-tuning
        init = self.is_initializing()
        if task == "seg" or init:
            seg = Conv3D(1, 1, impl=self.conv_impl, name="seg_head")(h)
            if task == "seg":
                if init:
                    self._cls_head(bottleneck, h)
                return seg
        return self._cls_head(bottleneck, h)

    def _cls_head(self, bottleneck, h):
        f = jnp.concatenate([global_avg_pool3d(bottleneck), global_avg_pool3d(h)], axis=-1)
        f = nn.relu(nn.Dense(self.cls_hidden, name="cls_hidden")(f))
        if self.head == "ce":
            return nn.Dense(1, name="cls_out")(f)[:, 0]
        return jax.nn.softplus(nn.Dense(2, name="cls_out")(f))


def from_config(fpr_cfg, conv_impl: str = "auto") -> DenseUNet3D:
    """Build DenseUNet3D from ``config.fpr`` (fields init_features, growth, block_layers,
    head and, when present, compression, cls_hidden, norm_groups, up_mode)."""
    get = lambda k, d: fpr_cfg.get(k, d) if hasattr(fpr_cfg, "get") else getattr(fpr_cfg, k, d)
    growth = get("growth", 12)
    return DenseUNet3D(
        init_features=int(get("init_features", 16)),
        growth=growth if isinstance(growth, int) else tuple(growth),
        block_layers=tuple(get("block_layers", (2, 2, 2))),
        compression=float(get("compression", 1.0)),
        cls_hidden=int(get("cls_hidden", 32)),
        head=get("head", "beta"),
        norm_groups=int(get("norm_groups", 4)),
        up_mode=get("up_mode", "nearest"),
        conv_impl=conv_impl,
    )
