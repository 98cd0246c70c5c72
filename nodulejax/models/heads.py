"""FPR output heads as probabilities: sigmoid (CE head) and Beta-evidential (Section 3.2).

Beta evidential head (Sensoy et al. 2018; Ghesu et al. 2019, the paper's [29]): the network
outputs two evidences ``evidence[:, 0] = e+`` (nodule) and ``evidence[:, 1] = e-`` (not
nodule), both >= 0 (DenseUNet3D applies ``softplus``). Then::

    alpha = e+ + 1,  beta = e- + 1,  S = alpha + beta
    p = alpha / S              (probability of "nodule", in (0, 1))
    u = 2 / S                  (uncertainty, in (0, 1]; u = 1 with no evidence)

The losses of these heads are in :mod:`nodulejax.losses.fpr`.
"""

from __future__ import annotations

import jax

from nodulejax.errors import ConfigError

__all__ = ["FPR_HEADS", "check_head", "beta_params", "beta_prob", "beta_uncertainty", "fpr_prob"]

FPR_HEADS = ("ce", "beta")


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


def check_head(head: str) -> None:
    if head not in FPR_HEADS:
        raise ConfigError(f"config.fpr.head={head!r}: expected one of {FPR_HEADS}")


def fpr_prob(outputs: jax.Array, *, head: str) -> jax.Array:
    """Probability of "nodule", (B,): sigmoid(logits) for "ce", alpha / S for "beta"."""
    check_head(head)
    if head == "ce":
        return jax.nn.sigmoid(outputs)
    return beta_prob(outputs)

