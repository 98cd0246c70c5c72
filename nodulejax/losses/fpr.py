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

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from nodulejax.models.heads import beta_params, check_head


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



def fpr_loss(outputs: jax.Array, labels: jax.Array, *, head: str, kl_weight=1.0) -> jax.Array:
    """Per-example FPR loss: ``head="ce"``: :func:`bce_loss` of logits (B,);
    ``head="beta"``: :func:`beta_loss` of evidence (B, 2). Returns (B,)."""
    check_head(head)
    if head == "ce":
        return bce_loss(outputs, labels)
    return beta_loss(outputs, labels, kl_weight)



# --- synthesizer (Section 3.2, Eqs. 5-6) ----------------------------------------------------

