"""Non-adversarial noises of the stress tests and of the Poisson augmentation (Section 5.3.2).

* :func:`uniform_noise_patches`: i.i.d. U(0, 1) voxels (Table 6 "Uniform noise", and the start
  of the PGD noise attack).
* :func:`uniform_noise`: ``clip(x + U(-a, a), 0, 1)`` per voxel (Table 5 "a uniform noise") -
  "uniform noise of magnitude a" read as its L-inf amplitude, the unit of the PGD eps
  (a = 0.3 is +-420 HU on the [-1000, 400] HU window).
* :func:`poisson_noise` / :func:`poisson_scaled`: the paper's rescaling: the [0, 1] patch is
  mapped to [0, s] (s = 50 or 5), one Poisson sample is drawn per voxel with that mean, mapped
  back (``/ s``) and clipped to [0, 1]; smaller s is stronger noise (relative std
  ``1 / sqrt(x s)``). One sampler (:func:`poisson_icdf`) serves Table 5 and the beta+poisson
  training rows, so the noise the networks are tested on is the noise they were trained on.

Patches are ``(B, P, P, P, 1)`` float32 in [0, 1]; ``key`` is one key (example i uses
``fold_in(key, i)``) or ``B`` keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial.pgd import per_example_keys
from nodulejax.errors import ConfigError

__all__ = ["uniform_noise_patches", "uniform_noise", "poisson_noise", "poisson_scaled",
           "poisson_icdf", "poisson_kmax"]


def uniform_noise_patches(key: jax.Array, n: int, patch_size) -> jax.Array:
    """n patches of i.i.d. U(0, 1) voxels, (n, P, P, P, 1) (Table 6 "Uniform noise")."""
    size = (patch_size,) * 3 if np.isscalar(patch_size) else tuple(patch_size)
    keys = per_example_keys(key, n)
    return jax.vmap(lambda k: jax.random.uniform(k, size + (1,), jnp.float32))(keys)


@jax.jit
def _uniform(keys, x, a):
    u = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], jnp.float32, -1.0, 1.0))(keys)
    return jnp.clip(x + a * u, 0.0, 1.0)


def uniform_noise(key: jax.Array, x: jax.Array, magnitude: float) -> jax.Array:
    """``clip(x + U(-a, a), 0, 1)`` per voxel (Table 5 "a uniform noise", a = 0.3/0.6/0.9)."""
    if magnitude < 0:
        raise ConfigError(f"uniform_noise: magnitude must be >= 0, got {magnitude}")
    return _uniform(per_example_keys(key, x.shape[0]), x, jnp.float32(magnitude))


def poisson_icdf(key, lam, kmax: int):
    """Poisson(lam) samples by inverse CDF, truncated at ``kmax`` (elementwise, lam >= 0).

    ``k = #{j < kmax : CDF(j) < u}``, u ~ U(0, 1), the pmf accumulated in a ``fori_loop``
    (O(voxels) memory). Exact up to the tail mass beyond kmax; XLA:CPU compiles it in a
    fraction of the time of ``jax.random.poisson``'s rejection sampler."""
    u = jax.random.uniform(key, lam.shape, jnp.float32)
    loglam = jnp.log(jnp.maximum(lam, 1e-30))

    def body(j, carry):
        cdf, count = carry
        jf = j.astype(jnp.float32)
        logp = -lam + jnp.where(jf > 0, jf * loglam, 0.0) - jax.lax.lgamma(jf + 1.0)
        cdf = cdf + jnp.exp(logp)
        return cdf, count + (cdf < u).astype(jnp.float32)

    zero = jnp.zeros(lam.shape, jnp.float32)
    return jax.lax.fori_loop(0, kmax, body, (zero, zero))[1]


def poisson_kmax(scale: float) -> int:
    """Truncation of :func:`poisson_icdf` for means up to ``scale``: tail mass < 1e-12."""
    return int(np.ceil(scale + 12 * np.sqrt(scale) + 12))


def _poisson_one(key, x, s, kmax: int):
    """``clip(Poisson(x s) / s, 0, 1)`` of one patch (any shape)."""
    lam = jnp.clip(x, 0.0, 1.0) * s
    return jnp.clip(poisson_icdf(key, lam, kmax) / s, 0.0, 1.0)


def poisson_noise(key: jax.Array, x: jax.Array, scale: float) -> jax.Array:
    """``clip(Poisson(x * s) / s, 0, 1)`` per voxel (Table 5 "x50" / "x5" Poisson noise)."""
    if not scale > 0:
        raise ConfigError(f"poisson_noise: scale must be > 0, got {scale}")
    return _poisson_fixed(per_example_keys(key, x.shape[0]), x, jnp.float32(scale),
                          poisson_kmax(float(scale)))


def _poisson_fixed_impl(keys, x, s, kmax: int):
    return jax.vmap(lambda k, xi: _poisson_one(k, xi, s, kmax))(keys, x)


_poisson_fixed = jax.jit(_poisson_fixed_impl, static_argnums=3)


def poisson_scaled(key, x, scales):
    """:func:`poisson_noise` per example with ``s`` drawn uniformly from ``scales`` (the
    beta+poisson training rows; traceable inside a train step). x (n, P, P, P, 1)."""
    kmax = poisson_kmax(max(scales))
    keys = jax.random.split(key, x.shape[0])

    def one(k, xi):
        ks, kp = jax.random.split(k)
        s = jnp.asarray(scales, jnp.float32)[jax.random.randint(ks, (), 0, len(scales))]
        return _poisson_one(kp, xi, s, kmax)

    return jax.vmap(one)(keys, x)
