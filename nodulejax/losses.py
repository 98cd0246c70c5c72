"""Losses of the FPR classifier (CE and Beta-evidential heads) and of the nodule synthesizer
(VAE + WGAN-GP, Eqs. 5-6 of the paper, Section 3.2). Pure functions of arrays.

Conventions: ``labels`` are (B,) in {0, 1} (1 = nodule), floats allowed. Per-example losses
are returned as (B,) so callers can weight or mask them; take ``.mean()`` for a scalar.

Beta evidential head (Sensoy et al. 2018, "Evidential deep learning"; Ghesu et al. 2019,
"Quantifying and leveraging classification uncertainty for chest radiograph assessment"):
the network outputs two evidences ``evidence[:, 0] = e+`` (nodule) and
``evidence[:, 1] = e-`` (not nodule), both >= 0 (DenseUNet3D applies ``softplus`` to its
head output). Then::

    alpha = e+ + 1,  beta = e- + 1,  S = alpha + beta
    p = alpha / S              (probability of "nodule", in (0, 1))
    u = 2 / S                  (uncertainty, in (0, 1]; u = 1 with no evidence)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from nodulejax.errors import ConfigError

FPR_HEADS = ("ce", "beta")


# --- FPR classifier -----------------------------------------------------------------------
def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Binary cross-entropy from logits, (B,), (B,) -> (B,).

    ``-y log sigmoid(l) - (1 - y) log(1 - sigmoid(l)) = softplus(l) - y l`` with the stable
    ``softplus = logaddexp(l, 0)`` (finite for any logit, exact gradient sigmoid(l) - y also
    at l = 0, where the max(l, 0) + log1p(exp(-|l|)) form has a kink in autodiff).
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels, logits.dtype)
    return jax.nn.softplus(logits) - labels * logits


def beta_params(evidence: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Evidence (B, 2) = (e+, e-) >= 0 -> (alpha, beta) = (e+ + 1, e- + 1), each (B,)."""
    return evidence[..., 0] + 1.0, evidence[..., 1] + 1.0


def beta_prob(evidence: jax.Array) -> jax.Array:
    """Expected nodule probability p = alpha / (alpha + beta), (B, 2) -> (B,) in (0, 1)."""
    a, b = beta_params(evidence)
    return a / (a + b)


def beta_uncertainty(evidence: jax.Array) -> jax.Array:
    """Uncertainty u = 2 / (alpha + beta), (B, 2) -> (B,) in (0, 1]."""
    a, b = beta_params(evidence)
    return 2.0 / (a + b)


def beta_kl_uniform(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """KL(Beta(alpha, beta) || Beta(1, 1)), elementwise.

    ``= ln G(a+b) - ln G(a) - ln G(b) + (a-1)(psi(a) - psi(a+b)) + (b-1)(psi(b) - psi(a+b))``
    (G = Gamma, psi = digamma; ``ln B(1, 1) = 0``). Zero iff alpha = beta = 1.
    """
    s = alpha + beta
    return (
        gammaln(s)
        - gammaln(alpha)
        - gammaln(beta)
        + (alpha - 1.0) * (digamma(alpha) - digamma(s))
        + (beta - 1.0) * (digamma(beta) - digamma(s))
    )


def beta_loss(evidence: jax.Array, labels: jax.Array, kl_weight: float | jax.Array = 1.0):
    """Beta-evidential loss (Sensoy et al. 2018 Eq. 5 + Eq. 9, two-class case), (B,).

    With y+ = y, y- = 1 - y, p+ = p = alpha / S, p- = 1 - p, S = alpha + beta::

        L = sum_{k in +,-} [ (y_k - p_k)^2 + p_k (1 - p_k) / (S + 1) ]
            + kl_weight * KL( Beta(alpha~, beta~) || Beta(1, 1) )
          = 2 (y - p)^2 + 2 p (1 - p) / (S + 1) + kl_weight * KL(...)

        alpha~ = y + (1 - y) alpha,   beta~ = (1 - y) + y beta

    i.e. the evidence for the true class is removed (set to 1) and only the misleading
    evidence is pulled to the uniform Beta(1, 1). ``kl_weight`` is the annealing
    coefficient lambda_t = min(1, t / T) (:func:`kl_anneal`).

    Args:
      evidence: (B, 2) non-negative (e+, e-).
      labels: (B,) in {0, 1}.
      kl_weight: scalar lambda_t.
    """
    y = jnp.asarray(labels, evidence.dtype)
    a, b = beta_params(evidence)
    s = a + b
    p = a / s
    mse = 2.0 * (y - p) ** 2 + 2.0 * p * (1.0 - p) / (s + 1.0)
    a_t = y + (1.0 - y) * a
    b_t = (1.0 - y) + y * b
    return mse + kl_weight * beta_kl_uniform(a_t, b_t)


def kl_anneal(step, anneal_steps: int) -> jax.Array:
    """lambda_t = min(1, t / T) (Sensoy et al. 2018); T <= 0 gives 1."""
    if anneal_steps <= 0:
        return jnp.asarray(1.0, jnp.float32)
    return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / anneal_steps)


def _check_head(head: str) -> None:
    if head not in FPR_HEADS:
        raise ConfigError(f"config.fpr.head={head!r}: expected one of {FPR_HEADS}")


def fpr_loss(outputs: jax.Array, labels: jax.Array, *, head: str, kl_weight=1.0) -> jax.Array:
    """Per-example FPR loss: ``head="ce"``: :func:`bce_loss` of logits (B,);
    ``head="beta"``: :func:`beta_loss` of evidence (B, 2). Returns (B,)."""
    _check_head(head)
    if head == "ce":
        return bce_loss(outputs, labels)
    return beta_loss(outputs, labels, kl_weight)


def fpr_prob(outputs: jax.Array, *, head: str) -> jax.Array:
    """Probability of "nodule", (B,): sigmoid(logits) for "ce", alpha / S for "beta"."""
    _check_head(head)
    if head == "ce":
        return jax.nn.sigmoid(outputs)
    return beta_prob(outputs)


# --- synthesizer (Section 3.2, Eqs. 5-6) ----------------------------------------------------
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
