"""Frozen, trained networks as handles: the FPR classifier and the synthesizer's generator.

The attacks, the augmentation pool, the stress tests and the figures all score or attack a
trained model loaded from ``WORKDIR/checkpoints/<name>`` (best checkpoint): an
:class:`FPRHandle` carries the flax module, its variables ``{"params": ...}``, its head
("ce" or "beta", from the Table 3 row) and its checkpoint name; a :class:`GenHandle` the VAE
whose ``decode(z)`` is the generator of Section 3.2, or, with ``config.synth.sampling =
"aggregate"``, that decoder behind the aggregate-posterior map ``z = m + A u``
(``models.vae.AggregatePriorGenerator``), whose fit the synthesizer's training writes next to
its checkpoint (:func:`save_latent_fit`, ``WORKDIR/checkpoints/synth/latent_fit.npz``).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from nodulejax.errors import CheckpointError, ConfigError
from nodulejax.experiments import SYNTH_MODEL, canonical_model_name, fpr_head
from nodulejax.models.build import fpr_model, vae_model
from nodulejax.models.vae import AggregatePriorGenerator, latent_variables
from nodulejax.runtime import checkpoint
from nodulejax.runtime.config_tools import tree_digest
from nodulejax.runtime.files import atomic_savez

__all__ = ["FPRHandle", "GenHandle", "load_fpr", "load_generator", "generator_handle", "SAMPLING",
           "latent_fit_path", "save_latent_fit", "load_latent_fit"]

#: ``config.synth.sampling``: where random latent codes come from (``models.vae`` module doc)
SAMPLING = ("prior", "aggregate")
LATENT_FIT_FILE = "latent_fit.npz"


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


def sampling_of(config) -> str:
    """``config.synth.sampling`` checked against :data:`SAMPLING` (default "prior")."""
    v = str(config.synth.get("sampling", "prior"))
    if v not in SAMPLING:
        raise ConfigError(f"config.synth.sampling={v!r}: expected one of {list(SAMPLING)}")
    return v


def load_generator(config, workdir: str) -> GenHandle:
    """The generator of the ``synth`` checkpoint (``load_params(workdir, "synth")["vae"]``):
    the VAE itself for ``synth.sampling="prior"``, the VAE behind its aggregate-posterior map
    for ``"aggregate"`` (variables ``{"params", "latent": {"mean", "chol"}}``)."""
    sampling = sampling_of(config)
    params = checkpoint.load_params(workdir, SYNTH_MODEL, "best")
    if "vae" not in params:
        raise CheckpointError(f"checkpoint {SYNTH_MODEL!r} under {workdir} has no 'vae' params "
                        f"(keys {sorted(params)})")
    latent = None if sampling == "prior" else load_latent_fit(workdir, params["vae"])
    return generator_handle(config, params["vae"], latent)


def generator_handle(config, vae_params, latent: dict | None = None) -> GenHandle:
    """The generator of ``config.synth.sampling`` for ``vae_params``: the VAE ("prior"), or
    the VAE behind ``z = m + A u`` ("aggregate"; ``latent`` holds ``mean`` and ``chol``, from
    :func:`load_latent_fit` or ``models.vae.latent_variables``)."""
    vae = vae_model(config)
    if sampling_of(config) == "prior":
        return GenHandle(vae, {"params": vae_params})
    if latent is None:
        raise ConfigError("config.synth.sampling='aggregate': the generator needs the latent "
                          "fit (mean, chol) of its training cut-outs")
    return GenHandle(AggregatePriorGenerator(vae), {"params": vae_params, "latent": {
        "mean": latent["mean"], "chol": latent["chol"]}})


def latent_fit_path(workdir: str) -> str:
    """``WORKDIR/checkpoints/synth/latent_fit.npz``."""
    return os.path.join(checkpoint.model_dir(workdir, SYNTH_MODEL), LATENT_FIT_FILE)


def save_latent_fit(workdir: str, vae_params, mean, cov, num_cutouts: int) -> str:
    """Write the aggregate posterior's Gaussian fit of ``vae_params`` (mean (L,), cov (L, L);
    ``models.vae.aggregate_gaussian``) with its lower Cholesky factor and the params' digest
    (atomic). Returns the path."""
    lat = latent_variables(mean, cov)
    path = latent_fit_path(workdir)
    atomic_savez(path, mean=lat["mean"], cov=np.asarray(cov, np.float32), chol=lat["chol"],
                 num_cutouts=np.int64(num_cutouts),
                 vae_digest=np.asarray(tree_digest(vae_params)))
    return path


def load_latent_fit(workdir: str, vae_params) -> dict:
    """The fit written by :func:`save_latent_fit` for exactly these ``vae_params``.

    Raises CheckpointError when the file is missing, unreadable or was fitted to other
    weights (a synthesizer retrained without refitting)."""
    path = latent_fit_path(workdir)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: missing; config.synth.sampling='aggregate' needs the "
                              f"latent fit that train_synth writes (retrain the synth stage, "
                              f"or set synth.sampling='prior')")
    try:
        with np.load(path) as f:
            fit = {k: f[k] for k in ("mean", "cov", "chol", "num_cutouts", "vae_digest")}
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: unreadable latent fit: {type(e).__name__}: {e}") from e
    want = tree_digest(vae_params)
    if str(fit["vae_digest"]) != want:
        raise CheckpointError(f"{path}: fitted to synthesizer weights {fit['vae_digest']}, the "
                              f"checkpoint holds {want}; retrain the synth stage")
    return fit

