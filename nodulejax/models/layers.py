"""Shared 3D layers (NDHWC, channels last) with a per-backend convolution lowering.

Why a lowering switch: XLA:CPU's native 3D convolution is many times slower than oneDNN, while
the same 3D convolution written as 2D convolutions over (y, x) with the depth axis folded into
the batch runs several times faster in XLA:CPU. On GPU/TPU XLA hands the 3D convolution to cuDNN
/ the TPU conv unit, which is the fast path there. Every lowering computes the same function
(forward and gradients, tested against ``lax.conv_general_dilated``) from the same parameters,
so a checkpoint trained with one lowering loads and runs with any other.

Lowerings (``impl``):

* ``"xla3d"``: ``lax.conv_general_dilated`` with NDHWC / DHWIO, 'SAME' padding.
* ``"2d"``:    pad depth explicitly as the 3D 'SAME' conv does, then
  ``y = sum_{kd} conv2d(x_pad[:, kd::s][:Dout] folded to (B*Dout, H, W, C), w[kd])``,
  i.e. one 2D conv (strides (s, s), the 3D conv's (y, x) 'SAME' pads) per kernel depth offset.
* ``"2dcat"``: the same decomposition with the k depth-shifted slices concatenated on the
  channel axis and a single 2D conv with kernel (k, k, k*Cin, Cout) (fewer passes over the
  output, k x input memory).
* In "2d" and "2dcat" a 1x1x1 convolution is a ``dot_general`` over the channel axis (XLA:CPU
  runs it as a GEMM, several times faster than as a 2D conv; benchmarks/RESULTS.md).
* ``"auto"``:  what :func:`set_default_conv_impl` set (from ``config.runtime.conv_impl``),
  else "xla3d" on GPU/TPU and, on the CPU, chosen per convolution from its input: "2d" when
  the input has more than 32^3 voxels *and* at least 16 channels, else "2dcat" ("2d" makes
  fewer copies of a large input, "2dcat" fewer passes over a small one; the per-convolution
  timings behind the rule are in benchmarks/RESULTS.md).

Parameters are always ``kernel`` (k, k, k, Cin, Cout) (DHWIO) and ``bias`` (Cout,), the
same names and layout as ``flax.linen.Conv``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nodulejax.errors import ConfigError

CONV_IMPLS = ("auto", "xla3d", "2d", "2dcat")
_DEFAULT_IMPL = {"impl": "auto"}


def set_default_conv_impl(impl: str) -> None:
    """Set what ``impl="auto"`` resolves to (from ``config.runtime.conv_impl``).

    ``"auto"`` restores the backend-based choice. Call before tracing/jitting the model.
    """
    if impl not in CONV_IMPLS:
        raise ConfigError(f"config.runtime.conv_impl={impl!r}: expected one of {CONV_IMPLS}")
    _DEFAULT_IMPL["impl"] = impl


CPU_2D_ABOVE_VOXELS = 32**3  # "auto" on CPU: "2d" above this many input voxels ...
CPU_2D_MIN_CHANNELS = 16  # ... and from this many input channels, else "2dcat"


def resolve_conv_impl(impl: str = "auto", spatial: tuple[int, ...] | None = None,
                      channels: int | None = None) -> str:
    """Map ``impl`` to a concrete lowering: "xla3d", "2d" or "2dcat".

    ``spatial`` (D, H, W) and ``channels`` (Cin) of the input decide "auto" on the CPU
    (module docstring); without them "auto" on the CPU gives "2dcat".
    """
    if impl not in CONV_IMPLS:
        raise ConfigError(f"conv impl {impl!r}: expected one of {CONV_IMPLS}")
    if impl == "auto":
        impl = _DEFAULT_IMPL["impl"]
    if impl == "auto":
        if jax.default_backend() != "cpu":
            return "xla3d"
        big = (spatial is not None and int(np.prod(spatial)) > CPU_2D_ABOVE_VOXELS
               and channels is not None and channels >= CPU_2D_MIN_CHANNELS)
        impl = "2d" if big else "2dcat"
    return impl


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """'SAME' padding (lo, hi) of one axis, exactly as ``lax.padtype_to_pads`` computes it."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def conv3d(x: jax.Array, kernel: jax.Array, strides: int = 1, impl: str = "auto") -> jax.Array:
    """3D convolution with 'SAME' padding.

    Args:
      x: (B, D, H, W, Cin).
      kernel: (kd, kh, kw, Cin, Cout) (DHWIO).
      strides: one stride for all three spatial axes.
      impl: "auto" | "xla3d" | "2d" | "2dcat" (see module docstring).
    Returns:
      (B, ceil(D/s), ceil(H/s), ceil(W/s), Cout).
    """
    impl = resolve_conv_impl(impl, x.shape[1:4], x.shape[-1])
    s = int(strides)
    if impl == "xla3d":
        return lax.conv_general_dilated(
            x, kernel, (s, s, s), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
        )
    b, d, h, w, cin = x.shape
    kd, kh, kw = kernel.shape[:3]
    cout = kernel.shape[-1]
    if kd == kh == kw == 1:  # 1x1x1: a matmul over channels ("2d"/"2dcat" only)
        xs = x[:, ::s, ::s, ::s] if s > 1 else x
        return lax.dot_general(xs, kernel.reshape(cin, cout), (((4,), (0,)), ((), ())))
    d_out = -(-d // s)
    xp = jnp.pad(x, ((0, 0), same_pads(d, kd, s), (0, 0), (0, 0), (0, 0)))
    pads_hw = (same_pads(h, kh, s), same_pads(w, kw, s))
    dn = ("NHWC", "HWIO", "NHWC")

    def fold(j):  # depth-shifted slice j -> (B*Dout, H, W, Cin)
        sl = lax.slice_in_dim(xp, j, j + (d_out - 1) * s + 1, stride=s, axis=1)
        return sl.reshape(b * d_out, h, w, cin)

    if impl == "2dcat":
        xs = jnp.concatenate([fold(j) for j in range(kd)], axis=-1)
        kk = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kd * cin, cout)
        y = lax.conv_general_dilated(xs, kk, (s, s), pads_hw, dimension_numbers=dn)
    else:
        y = None
        for j in range(kd):
            yj = lax.conv_general_dilated(fold(j), kernel[j], (s, s), pads_hw, dimension_numbers=dn)
            y = yj if y is None else y + yj
    return y.reshape(b, d_out, y.shape[1], y.shape[2], cout)


class Conv3D(nn.Module):
    """3D convolution, 'SAME' padding, input (B, D, H, W, C) -> (B, D', H', W', features).

    Parameters ``kernel`` (k, k, k, Cin, features) and ``bias`` (features,), laid out as in
    ``flax.linen.Conv`` whatever the lowering ``impl`` (see module docstring).
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    use_bias: bool = True
    impl: str = "auto"
    bias_init: float = 0.0  # constant initial bias (e.g. a focal-loss prior, see ResUNet3D)

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (k, k, k, x.shape[-1], self.features)
        )
        kernel = kernel.astype(x.dtype)
        y = conv3d(x, kernel, self.strides, self.impl)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
            y = y + bias.astype(y.dtype)
        return y


class GroupNorm(nn.Module):
    """Group normalisation (Wu & He 2018) over (D, H, W) and channel groups, per example.

    Same function, parameters (``scale``, ``bias`` of shape (C,)) and auto-name as
    ``flax.linen.GroupNorm(num_groups, epsilon)`` with its default fast variance
    (E[x^2] - E[x]^2), so checkpoints and the PyTorch twin are unchanged; written as two
    channel-sum reductions and one fused ``x * a + b`` (per example and channel) because that
    is faster on XLA:CPU (benchmarks/RESULTS.md). Input (B, ..., C), C divisible by num_groups.
    """

    num_groups: int = 32
    epsilon: float = 1e-6  # flax.linen.GroupNorm's default

    @nn.compact
    def __call__(self, x):
        b, c, g = x.shape[0], x.shape[-1], int(self.num_groups)
        if c % g:
            raise ValueError(f"GroupNorm: {c} channels not divisible by {g} groups")
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        xf = x.reshape(b, -1, c).astype(jnp.promote_types(x.dtype, jnp.float32))
        n = xf.shape[1] * (c // g)
        s1 = jnp.sum(xf, axis=1).reshape(b, g, c // g).sum(-1)
        s2 = jnp.sum(xf * xf, axis=1).reshape(b, g, c // g).sum(-1)
        mean = s1 / n
        var = jnp.maximum(s2 / n - mean * mean, 0.0)
        a = jnp.repeat(lax.rsqrt(var + self.epsilon), c // g, axis=1) * scale
        off = bias - jnp.repeat(mean, c // g, axis=1) * a
        shape = (b,) + (1,) * (x.ndim - 2) + (c,)
        return (x * a.reshape(shape).astype(x.dtype) + off.reshape(shape).astype(x.dtype))


def _pool(x: jax.Array, window: int, reducer: str) -> jax.Array:
    b, d, h, w, c = x.shape
    n = window
    if d % n or h % n or w % n:
        fn = nn.max_pool if reducer == "max" else nn.avg_pool
        return fn(x, (n, n, n), (n, n, n), padding="SAME")
    xr = x.reshape(b, d // n, n, h // n, n, w // n, n, c)
    return xr.max(axis=(2, 4, 6)) if reducer == "max" else xr.mean(axis=(2, 4, 6))


def max_pool3d(x: jax.Array, window: int = 2) -> jax.Array:
    """Non-overlapping max pooling (window = stride), (B,D,H,W,C) -> (B,D/n,H/n,W/n,C).

    When the sizes divide, written as a reshape + max (whose gradient is a cheap
    elementwise select) instead of ``reduce_window`` (whose gradient, ``select_and_scatter``,
    is slow on XLA:CPU). Otherwise 'SAME' ``flax.linen.max_pool``.
    """
    return _pool(x, window, "max")


def avg_pool3d(x: jax.Array, window: int = 2) -> jax.Array:
    """Non-overlapping average pooling (window = stride); reshape + mean when sizes divide."""
    return _pool(x, window, "avg")


def global_avg_pool3d(x: jax.Array) -> jax.Array:
    """(B, D, H, W, C) -> (B, C), mean over the three spatial axes."""
    return x.mean(axis=(1, 2, 3))


def upsample3d(x: jax.Array, factor: int = 2, method: str = "nearest") -> jax.Array:
    """Resize (B, D, H, W, C) by an integer factor: "nearest" (repeat) or "trilinear"."""
    b, d, h, w, c = x.shape
    f = factor
    if method == "nearest":
        x = jnp.broadcast_to(x[:, :, None, :, None, :, None], (b, d, f, h, f, w, f, c))
        return x.reshape(b, d * f, h * f, w * f, c)
    if method == "trilinear":
        return jax.image.resize(x, (b, d * f, h * f, w * f, c), method="trilinear")
    raise ConfigError(f"upsample method {method!r}: expected 'nearest' or 'trilinear'")


def voxel_shuffle(x: jax.Array, factor: int = 2) -> jax.Array:
    """(B, D, H, W, C*f^3) -> (B, D*f, H*f, W*f, C): 3D pixel shuffle (depth-to-space)."""
    b, d, h, w, cf = x.shape
    f = factor
    c = cf // f**3
    if c * f**3 != cf:
        raise ConfigError(f"voxel_shuffle: {cf} channels not divisible by factor^3 = {f**3}")
    x = x.reshape(b, d, h, w, f, f, f, c)
    x = jnp.transpose(x, (0, 1, 4, 2, 5, 3, 6, 7))
    return x.reshape(b, d * f, h * f, w * f, c)


class UpConv3D(nn.Module):
    """Up-sampling by ``factor`` followed by a plain 3D convolution.

    Used instead of a transposed convolution because XLA's gradient of a 3D transposed conv
    picks a poor algorithm on CUDA (jax-ml/jax#31662, openxla/xla#34273). ``mode``:
    "nearest" / "trilinear": resize then ``Conv3D(features, kernel_size)``;
    "shuffle": ``Conv3D(features * factor^3, kernel_size)`` at low resolution then
    :func:`voxel_shuffle` (sub-voxel convolution).
    """

    features: int
    factor: int = 2
    mode: str = "nearest"
    kernel_size: int = 3
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        if self.mode == "shuffle":
            y = Conv3D(self.features * self.factor**3, self.kernel_size, impl=self.impl)(x)
            return voxel_shuffle(y, self.factor)
        x = upsample3d(x, self.factor, self.mode)
        return Conv3D(self.features, self.kernel_size, impl=self.impl)(x)


def count_macs(module: nn.Module, *args, method=None, **kwargs) -> dict:
    """Exact multiply-accumulate count of ``module.init(key, *args, **kwargs)``'s forward.

    Counts every :class:`Conv3D` (``output voxels * k^3 * Cin * Cout`` per example batch) and
    ``flax.linen.Dense`` (``rows * in * out``), traced abstractly (``jax.eval_shape``, no
    compute). Element-wise work (norms, activations, pooling) is not counted, as in the usual
    MAC tables (paper Table 2). Returns ``{"macs": int, "params": int, "layers": [...]}``.
    """
    layers_out = []

    def interceptor(next_fun, call_args, call_kwargs, context):
        out = next_fun(*call_args, **call_kwargs)
        mod = context.module
        if context.method_name != "__call__":
            return out
        x = call_args[0]
        if isinstance(mod, Conv3D):
            k = mod.kernel_size
            macs = int(np.prod(out.shape[:-1])) * k**3 * x.shape[-1] * mod.features
            layers_out.append((mod.path, "Conv3D", tuple(out.shape), macs))
        elif isinstance(mod, nn.Dense):
            macs = int(np.prod(x.shape[:-1])) * x.shape[-1] * mod.features
            layers_out.append((mod.path, "Dense", tuple(out.shape), macs))
        return out

    def init(*a):
        with nn.intercept_methods(interceptor):
            return module.init(jax.random.PRNGKey(0), *a, method=method, **kwargs)

    shapes = jax.eval_shape(init, *args)
    params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes["params"]))
    return {"macs": sum(m for *_, m in layers_out), "params": params, "layers": layers_out}
