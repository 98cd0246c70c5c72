"""Frozen, trained networks as handles: the FPR classifier and the synthesizer's generator.

The attacks, the augmentation pool, the stress tests and the figures all score or attack a
trained model loaded from ``WORKDIR/checkpoints/<name>`` (best checkpoint): an
:class:`FPRHandle` carries the flax module, its variables ``{"params": ...}``, its head
("ce" or "beta", from the Table 3 row) and its checkpoint name; a :class:`GenHandle` the VAE
whose ``decode(z)`` is the generator of Section 3.2.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from nodulejax.errors import CheckpointError
from nodulejax.experiments import SYNTH_MODEL, canonical_model_name, fpr_head
from nodulejax.models.build import fpr_model, vae_model
from nodulejax.runtime import checkpoint

__all__ = ["FPRHandle", "GenHandle", "load_fpr", "load_generator"]


class FPRHandle(NamedTuple):
    """A loaded FPR classifier: flax module, variables ``{"params": ...}``, head."""

    model: Any
    variables: Any
    head: str
    name: str = ""


class GenHandle(NamedTuple):
    """The synthesizer's generator: a module with ``decode(z)`` and ``latent_dim``, variables."""

    model: Any
    variables: Any


def load_fpr(config, workdir: str, model_name: str) -> FPRHandle:
    """The trained FPR ``model_name`` (``checkpoint.load_params``, best checkpoint)."""
    model_name = canonical_model_name(model_name)
    head = fpr_head(config, model_name)
    params = checkpoint.load_params(workdir, model_name, "best")
    return FPRHandle(fpr_model(config, head), {"params": params}, head, model_name)


def load_generator(config, workdir: str) -> GenHandle:
    """The VAE decoder of the ``synth`` checkpoint (``load_params(workdir, "synth")["vae"]``)."""
    params = checkpoint.load_params(workdir, SYNTH_MODEL, "best")
    if "vae" not in params:
        raise CheckpointError(f"checkpoint {SYNTH_MODEL!r} under {workdir} has no 'vae' params "
                        f"(keys {sorted(params)})")
    return GenHandle(vae_model(config), {"params": params["vae"]})

