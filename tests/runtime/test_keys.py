"""nodulejax.runtime.keys: named PRNG streams, one key per (seed, stream, item); keys as
stored data (raw words, JSON) and back."""

import json

import jax
import numpy as np

from nodulejax.runtime import keys
from nodulejax.runtime.keys import STREAMS, item_keys, stream_key


def test_streams_are_distinct_and_keys_depend_only_on_their_item():
    assert len(set(STREAMS.values())) == len(STREAMS)
    k = item_keys(0, STREAMS["pool/noise"], np.arange(6))
    np.testing.assert_array_equal(item_keys(0, STREAMS["pool/noise"], [4, 5]), k[4:])
    assert not np.array_equal(item_keys(1, STREAMS["pool/noise"], [0]), k[:1])
    assert not np.array_equal(item_keys(0, STREAMS["stress/noise"], [0]), k[:1])
    base = stream_key(0, "pool/noise")
    np.testing.assert_array_equal(np.asarray(jax.random.fold_in(base, 3)), k[3])


def _words(k):
    return np.asarray(jax.random.key_data(k) if keys.is_typed_key(k) else k)


def test_keys_as_stored_data_come_back_bitwise():
    typed, raw = jax.random.key(3), jax.random.PRNGKey(3)
    for k in (typed, raw):
        back = keys.decode_key(json.loads(json.dumps(keys.encode_key(k))))
        assert keys.is_typed_key(back) == keys.is_typed_key(k)
        np.testing.assert_array_equal(_words(back), _words(k))
    tree = {"k": typed, "x": np.ones(2)}
    stored = keys.keys_to_raw(tree)
    assert stored["k"].dtype == np.uint32
    again = keys.raw_to_keys(tree, stored)
    assert keys.is_typed_key(again["k"])
    np.testing.assert_array_equal(_words(again["k"]), _words(typed))
