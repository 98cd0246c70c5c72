"""Losses of the nodule synthesizer: VAE + WGAN-GP (Section 3.2, Eqs. 5-6). Pure functions.

Eq. 6: ``L_enc + L_gen = |x~ - x| + lambda1 KL(N(mu, sigma^2) || N(0, 1)) - lambda2 L_WGAN``
with lambda1 = 1e-5, lambda2 = 0.1 (paper); Eq. 5: the critic's WGAN-GP loss (Gulrajani et
al. 2017, gradient penalty weight 10).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["vae_kl", "l1_recon", "gradient_penalty", "wgan_gp_critic_loss",
           "wgan_generator_loss", "synth_generator_loss"]

def vae_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """D_KL(N(mu, sigma^2) || N(0, I)) per example, summed over latent dims, (B, L) -> (B,).

    ``0.5 * sum_l (sigma_l^2 + mu_l^2 - 1 - log sigma_l^2)`` with ``logvar = log sigma^2``.
    """
    return 0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1.0 - logvar, axis=-1)


def l1_recon(x_hat: jax.Array, x: jax.Array) -> jax.Array:
    """Mean absolute reconstruction error per example, (B, ...) -> (B,) (Eq. 6 first term)."""
    d = jnp.abs(x_hat - x)
    return d.reshape(d.shape[0], -1).mean(axis=1)


def gradient_penalty(critic_fn: Callable, real, fake, key) -> jax.Array:
    """WGAN-GP penalty (Gulrajani et al. 2017): mean over the batch of
    ``(||grad_x D(x_hat)||_2 - 1)^2`` with ``x_hat = eps real + (1 - eps) fake``,
    ``eps ~ U(0, 1)`` per example (drawn from ``key``). ``critic_fn``: (B, ...) -> (B,), with
    each score depending only on its own example (no batch statistics)."""
    b = real.shape[0]
    eps = jax.random.uniform(key, (b,) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake
    g = jax.grad(lambda xh: jnp.sum(critic_fn(xh)))(x_hat)
    norm = jnp.sqrt(jnp.sum(g.reshape(b, -1) ** 2, axis=1) + 1e-12)
    return jnp.mean((norm - 1.0) ** 2)


def wgan_gp_critic_loss(critic_fn: Callable, real, fake, key, gp_weight: float = 10.0):
    """Critic loss of Eq. 5 (scalar):
    ``mean(D(fake)) - mean(D(real)) + gp_weight * mean((||grad D(x_hat)||_2 - 1)^2)``.

    ``real`` and ``fake`` are treated as constants (``stop_gradient``): differentiate this
    w.r.t. the critic parameters closed over by ``critic_fn``. ``key`` draws the
    interpolation weights (explicit PRNG, same key -> same loss).
    """
    real = jax.lax.stop_gradient(real)
    fake = jax.lax.stop_gradient(fake)
    wd = jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real))
    return wd + gp_weight * gradient_penalty(critic_fn, real, fake, key)


def wgan_generator_loss(d_fake: jax.Array) -> jax.Array:
    """Generator adversarial term, scalar ``-mean(D(fake))``.

    Eq. 6 subtracts lambda_2 L_WGAN-GP; of that, only ``mean(D(fake))`` depends on the
    generator in the usual WGAN-GP treatment (the penalty is not back-propagated to the
    generator), so ``-lambda_2 L_WGAN-GP`` contributes ``lambda_2 * (-mean(D(fake)))``.
    """
    return -jnp.mean(d_fake)


def synth_generator_loss(x_hat, x, mu, logvar, d_fake, lambda_kl=1e-5, lambda_adv=0.1):
    """Encoder + generator objective of Eq. 6 (scalar):
    ``mean_i |x~_i - x_i|_1 + lambda_1 mean_i KL_i + lambda_2 * (-mean_i D(x~_i))``."""
    return (
        jnp.mean(l1_recon(x_hat, x))
        + lambda_kl * jnp.mean(vae_kl(mu, logvar))
        + lambda_adv * wgan_generator_loss(d_fake)
    )

