"""Named PRNG streams: every random draw of the study derives from ``config.seed`` (or
``config.stress.seed``) through one stream id of :data:`STREAMS` and the item's index.

``item_keys(seed, STREAMS[name], items)[i] = fold_in(fold_in(PRNGKey(seed), stream), item_i)``,
so a sample never depends on the batch it ran in, on a shard layout or on restarts. The ids
are part of the results (changing one changes the pool and the stress inputs): add new
streams, never renumber.

Keys as stored data (the checkpoints): :func:`keys_to_raw` / :func:`raw_to_keys` turn the
typed keys of a pytree into their raw ``uint32`` words and back, :func:`encode_key` /
:func:`decode_key` one key to JSON (words, shape, implementation name) and back, bitwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.errors import CheckpointError

__all__ = ["STREAMS", "item_keys", "stream_key", "is_typed_key", "keys_to_raw", "raw_to_keys",
           "encode_key", "decode_key"]

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
    # numpy seed (seed, id) of the synthesizer's score-gap interval (study.report,
    # analysis/synth_gap.py)
    "report/synth_gap": 303,
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


# ------------------------------------------------------------- PRNG keys as stored data
def is_typed_key(x) -> bool:
    """Whether ``x`` is a typed PRNG key array (``jax.random.key``), not raw ``uint32``."""
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_raw(tree):
    """``tree`` with every typed key replaced by its raw key data (what a checkpoint stores)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_typed_key(x) else x, tree)


def raw_to_keys(template, tree):
    """Inverse of :func:`keys_to_raw`: re-wrap the leaves that are typed keys in ``template``
    (with the template key's implementation)."""
    def wrap(t, x):
        if is_typed_key(t):
            return jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
        return x

    return jax.tree.map(wrap, template, tree)


def encode_key(key) -> dict:
    """A PRNG key (typed or raw uint32) as JSON: its raw words, shape and impl name."""
    if is_typed_key(key):
        raw = np.asarray(jax.random.key_data(key))
        impl = str(jax.random.key_impl(key))
    else:
        raw = np.asarray(key)
        impl = None
    if raw.dtype != np.uint32:
        raise CheckpointError(f"PRNG key must be a typed key or uint32 array, got {raw.dtype}")
    return {"data": raw.ravel().tolist(), "shape": list(raw.shape), "impl": impl}


def decode_key(d: Mapping):
    """Inverse of :func:`encode_key`: the key, typed when an ``impl`` is recorded."""
    raw = jnp.asarray(np.asarray(d["data"], np.uint32).reshape(d["shape"]))
    if d.get("impl"):
        return jax.random.wrap_key_data(raw, impl=d["impl"])
    return raw
