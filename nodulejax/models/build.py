"""Every network of the study from its config block: one place that turns a config into a model.

* :func:`cg_model` / :func:`rpn_model`: the blob ResUNet and ResUNet + RPN head of ``config.cg``
  (Section 3.1, Table 2);
* :func:`fpr_model`: the DenseUNet3D false-positive reducer of ``config.fpr`` (CE or Beta head);
* :func:`vae_model` / :func:`critic_model`: the synthesizer's VAE and WGAN-GP critic of
  ``config.synth`` (Section 3.2).

Each returns one (hashable) flax module per setting, so jitted functions cached on a module
(:func:`fpr_prob_fn`, the PGD losses) compile once per network, not once per call.
``config.runtime.conv_impl`` picks the 3D convolution lowering (:mod:`nodulejax.models.layers`).
"""

from __future__ import annotations

import functools

import jax

from nodulejax.models import critic, denseunet, vae
from nodulejax.models.heads import fpr_prob
from nodulejax.models.resunet import ResUNet3D, build_resunet
from nodulejax.models.rpn import ResUNetRPN, build_rpn

__all__ = ["cg_model", "rpn_model", "fpr_model", "vae_model", "critic_model", "fpr_prob_fn"]

_MODELS: dict = {}


def _conv_impl(config) -> str:
    return str(config.runtime.get("conv_impl", "auto"))


def _block_key(block) -> str:
    d = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    return repr(sorted(d.items()))


def cg_model(config) -> ResUNet3D:
    """The blob-heatmap ResUNet of ``config.cg`` (both blob stages and detection)."""
    return build_resunet(config.cg, _conv_impl(config))


def rpn_model(config) -> ResUNetRPN:
    """ResUNet backbone + RPN head of ``config.cg`` (one anchor per ``c.cg.anchors_mm``)."""
    return build_rpn(config.cg, _conv_impl(config))


def fpr_model(config, head: str | None = None):
    """DenseUNet3D from ``config.fpr`` (its ``head`` overridden by ``head``)."""
    f = config.fpr.to_dict() if hasattr(config.fpr, "to_dict") else dict(config.fpr)
    if head is not None:
        f["head"] = head
    return denseunet.from_config(f, conv_impl=_conv_impl(config))


def vae_model(config):
    """VAE from ``config.synth`` (``models.vae.from_config``; one object per setting)."""
    k = ("vae", _block_key(config.synth), _conv_impl(config))
    if k not in _MODELS:
        _MODELS[k] = vae.from_config(config.synth, conv_impl=k[2])
    return _MODELS[k]


def critic_model(config):
    """WGAN-GP critic from ``config.synth`` (``models.critic.from_config``)."""
    k = ("critic", _block_key(config.synth), _conv_impl(config))
    if k not in _MODELS:
        _MODELS[k] = critic.from_config(config.synth, conv_impl=k[2])
    return _MODELS[k]


@functools.lru_cache(maxsize=128)
def fpr_prob_fn(model, head: str):
    """Jitted ``f(variables, x) -> p (B,)``: the FPR's probability of "nodule" for patches
    x (B, P, P, P, 1) in [0, 1] (:func:`nodulejax.models.heads.fpr_prob` of its output)."""
    return jax.jit(lambda variables, x: fpr_prob(model.apply(variables, x, task="cls"),
                                                 head=head))
