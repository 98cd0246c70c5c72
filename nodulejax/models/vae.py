"""3D convolutional VAE nodule synthesizer (Section 3.2, Eqs. 1-3, Fig. 4).

``f_encoder``: x (B, P, P, P, 1) in [0, 1] -> (mu, logvar) (B, L) (Eq. 1, logvar = log sigma^2);
z = mu + sigma * eps, eps ~ N(0, I) (Eq. 2, reparameterised, explicit key);
``f_generator``: z (B, L) -> x~ (B, P, P, P, 1) in [0, 1] (sigmoid output, Eq. 3).

Layout (P a power of two >= 8; n = log2(P / 4) down/up levels, widths w * 2^i capped at
``max_width``)::

    encoder: Conv3D(w, 3) -> GN -> ReLU, then n x [Conv3D(w_i, 3, stride 2) -> GN -> ReLU]
             -> flatten (4^3 * w_n) -> Dense(2 L) -> (mu, logvar)
    decoder: Dense(4^3 * w_n) -> reshape (4, 4, 4, w_n) -> ReLU,
             n x [nearest 2x up-sampling -> Conv3D(w_i, 3) -> GN -> ReLU]
             -> Conv3D(1, 3) -> sigmoid

Up-sampling is resize + conv, not a transposed conv (the transposed-conv gradient is slow in XLA
on CUDA, jax-ml/jax#31662; latent PGD differentiates through the decoder). GroupNorm keeps
``apply`` pure (no batch statistics).

Use: ``VAE(...).apply(vars, x, key)`` -> (recon, mu, logvar);
``apply(vars, x, method=VAE.encode)``; ``apply(vars, z, method=VAE.decode)``.

Where random codes come from (``config.synth.sampling``): ``"prior"`` is the paper's
``z ~ N(0, I)`` (Section 3.2); ``"aggregate"`` draws ``u ~ N(0, I)`` and decodes
``z = m + A u``, with ``m`` and ``A A^T`` the mean and covariance of the *aggregate posterior*
``q(z) = (1/N) sum_i N(mu_i, diag sigma_i^2)`` over the training cut-outs
(:func:`aggregate_gaussian`; the moment-matched Gaussian of "ex-post density estimation",
Ghosh et al. 2020, and of the two-stage VAE, Dai & Wipf 2019). :class:`AggregatePriorGenerator`
is that map in front of the decoder, so every consumer (random sampling, the latent PGD, the
diameter filter) sees a generator of ``u`` with the same ``apply(vars, u, method="decode")``
interface; the latent PGD's radius is then measured in units of the codes' own spread.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.errors import ConfigError
from nodulejax.models.layers import Conv3D, GroupNorm, upsample3d

_BASE = 4  # spatial side at the bottleneck


def _groups(c: int, max_groups: int = 4) -> int:
    return max(d for d in range(1, min(max_groups, c) + 1) if c % d == 0)


class VAE(nn.Module):
    """Conv VAE of Section 3.2. Attributes: latent_dim L, width w (first level), patch_size P
    (power of two >= 8), max_width (channel cap), conv_impl (layers.Conv3D lowering)."""

    latent_dim: int = 32
    width: int = 16
    patch_size: int = 32
    max_width: int = 128
    conv_impl: str = "auto"

    def setup(self):
        p = self.patch_size
        n = int(round(math.log2(p / _BASE))) if p >= 2 * _BASE else 0
        if n < 1 or _BASE * 2**n != p:
            raise ConfigError(
                f"config.synth.patch_size={p}: expected a power of two >= {2 * _BASE}"
            )
        self.n_levels = n
        widths = [min(self.width * 2**i, self.max_width) for i in range(n + 1)]
        self.widths = widths
        impl = self.conv_impl
        # encoder
        self.enc_in = Conv3D(widths[0], 3, impl=impl)
        self.enc_in_norm = GroupNorm(_groups(widths[0]))
        self.enc_convs = [Conv3D(widths[i + 1], 3, strides=2, impl=impl) for i in range(n)]
        self.enc_norms = [GroupNorm(_groups(widths[i + 1])) for i in range(n)]
        self.enc_out = nn.Dense(2 * self.latent_dim)
        # decoder (generator)
        self.dec_in = nn.Dense(_BASE**3 * widths[n])
        self.dec_convs = [Conv3D(widths[i], 3, impl=impl) for i in range(n - 1, -1, -1)]
        self.dec_norms = [GroupNorm(_groups(widths[i])) for i in range(n - 1, -1, -1)]
        self.dec_out = Conv3D(1, 3, impl=impl)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, P, P, P, 1) in [0, 1] -> (mu, logvar), each (B, L). Eq. 1."""
        h = nn.relu(self.enc_in_norm(self.enc_in(x)))
        for conv, norm in zip(self.enc_convs, self.enc_norms, strict=True):
            h = nn.relu(norm(conv(h)))
        h = self.enc_out(h.reshape(h.shape[0], -1))
        mu, logvar = jnp.split(h, 2, axis=-1)
        return mu, logvar

    def decode(self, z: jax.Array) -> jax.Array:
        """z (B, L) -> synthetic nodule patch (B, P, P, P, 1) in [0, 1]. Eq. 3."""
        h = nn.relu(self.dec_in(z))
        h = h.reshape(z.shape[0], _BASE, _BASE, _BASE, self.widths[-1])
        for conv, norm in zip(self.dec_convs, self.dec_norms, strict=True):
            h = nn.relu(norm(conv(upsample3d(h, 2, "nearest"))))
        return jax.nn.sigmoid(self.dec_out(h))

    def __call__(self, x: jax.Array, key: jax.Array):
        """x, PRNG key -> (recon (B,P,P,P,1), mu (B,L), logvar (B,L)). Eqs. 1-3."""
        mu, logvar = self.encode(x)
        z = reparameterize(key, mu, logvar)
        return self.decode(z), mu, logvar


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) from ``key`` (Eq. 2)."""
    return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


def from_config(synth_cfg, conv_impl: str = "auto") -> VAE:
    """VAE from ``config.synth`` (latent_dim, width, patch_size, optional max_width)."""
    get = synth_cfg.get if hasattr(synth_cfg, "get") else lambda k, d: getattr(synth_cfg, k, d)
    return VAE(
        latent_dim=int(get("latent_dim", 32)),
        width=int(get("width", 16)),
        patch_size=int(get("patch_size", 32)),
        max_width=int(get("max_width", 128)),
        conv_impl=conv_impl,
    )


def aggregate_gaussian(mu, logvar):
    """Mean (L,) and covariance (L, L) of the aggregate posterior (module doc).

    ``q(z) = (1/N) sum_i N(mu_i, diag exp(logvar_i))`` has mean ``mean_i mu_i`` and, by the
    law of total covariance, covariance ``Cov_i(mu_i) + diag(mean_i exp(logvar_i))`` (the
    population covariance of the means, divisor N). mu, logvar (N, L) -> ((L,), (L, L)),
    numpy float64 (a host-side fit after training).
    """
    mu = np.asarray(mu, np.float64)
    var = np.exp(np.asarray(logvar, np.float64))
    if mu.ndim != 2 or var.shape != mu.shape or len(mu) == 0:
        raise ValueError(f"aggregate_gaussian: mu {mu.shape} and logvar {var.shape} must be "
                         f"the same non-empty (N, L)")
    mean = mu.mean(axis=0)
    d = mu - mean
    return mean, d.T @ d / len(mu) + np.diag(var.mean(axis=0))


def latent_variables(mean, cov) -> dict:
    """The ``"latent"`` variables of :class:`AggregatePriorGenerator` for a fit (mean (L,),
    cov (L, L)): ``{"mean": (L,), "chol": (L, L) lower Cholesky factor of cov}``, float32."""
    chol = np.linalg.cholesky(np.asarray(cov, np.float64))
    return {"mean": np.asarray(mean, np.float32), "chol": chol.astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class AggregatePriorGenerator:
    """The decoder of ``vae`` fed ``z = m + A u`` (module doc): a generator of codes u ~ N(0, I).

    ``variables = {"params": <VAE params>, "latent": {"mean": (L,), "chol": (L, L)}}`` with
    ``chol`` the lower Cholesky factor A of the aggregate covariance. Interface of the flax
    VAE as the attacks use it: ``latent_dim`` and ``apply(variables, u, method="decode")``
    -> (B, P, P, P, 1) in [0, 1]; u (B, L). Hashable (a frozen dataclass of a flax module),
    so jitted callers can cache on it.
    """

    vae: VAE

    @property
    def latent_dim(self) -> int:
        return int(self.vae.latent_dim)

    def apply(self, variables, u, method="decode"):
        if method not in ("decode", VAE.decode):
            raise ValueError(f"AggregatePriorGenerator.apply: only method='decode' "
                             f"(got {method!r})")
        lat = variables["latent"]
        z = lat["mean"].astype(u.dtype) + u @ lat["chol"].astype(u.dtype).T
        return self.vae.apply({"params": variables["params"]}, z, method="decode")
