"""Named PRNG streams: every random draw of the study derives from ``config.seed`` (or
``config.stress.seed``) through one stream id of :data:`STREAMS` and the item's index.

``item_keys(seed, STREAMS[name], items)[i] = fold_in(fold_in(PRNGKey(seed), stream), item_i)``,
so a sample never depends on the batch it ran in, on a shard layout or on restarts. The ids
are part of the results (changing one changes the pool and the stress inputs): add new
streams, never renumber.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["STREAMS", "item_keys", "stream_key"]

STREAMS = {
    # the augmentation pool's four kinds (Section 4)
    "pool/syn_random": 1, "pool/syn_pgd": 2, "pool/perturb": 3, "pool/noise": 4,
    # stress tests (Tables 4-6)
    "stress/synthetic": 101, "stress/uniform": 102, "stress/poisson": 103, "stress/adv": 104,
    "stress/noise": 105, "stress/noise_adv": 106, "stress/negative_adv": 107,
    # figures (Figs. 5, 6, 9)
    "figures/synthetic": 201, "figures/perturbations": 202, "figures/noise_levels": 203,
    # numpy seeds (seed, id) of the claims' bootstrap resamples (study.claims)
    "claims/table3": 301, "claims/stress": 302,
    # numpy salts of the lung background samplers (data.backgrounds.background_patches)
    "backgrounds/pool": 0xB6, "backgrounds/stress": 0x5E,
    # training: per-example augmentation seeds (train.sampler) and the in-step attacks
    "train/augment_seeds": 0xA06, "train/inloop": 7,
    # the synthesizer's quality probe (train.synth.synth_quality): prior samples
    "synth/quality": 401,
}


def item_keys(seed: int, stream: int, items) -> np.ndarray:
    """Raw keys (n, 2) uint32: ``fold_in(fold_in(PRNGKey(seed), stream), item)``."""
    base = jax.random.fold_in(jax.random.PRNGKey(int(seed)), int(stream))
    items = jnp.asarray(np.asarray(items, np.uint32))
    return np.asarray(jax.vmap(lambda i: jax.random.fold_in(base, i))(items))


def stream_key(seed: int, name: str) -> jax.Array:
    """The base key of stream ``name``: ``fold_in(PRNGKey(seed), STREAMS[name])``."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), STREAMS[name])
