"""Shared 3D layers (NDHWC, channels last).

STUB API (being replaced by the conv-lowering implementation): `Conv3D` keeps this
signature; `impl` picks the lowering ("auto" | "xla3d" | "2d").
"""

import flax.linen as nn


class Conv3D(nn.Module):
    """3D convolution, 'SAME' padding, input (B, D, H, W, C) -> (B, D', H', W', features)."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    use_bias: bool = True
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel_size, self.strides
        return nn.Conv(self.features, (k, k, k), (s, s, s), padding="SAME", use_bias=self.use_bias)(x)
