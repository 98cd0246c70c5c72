"""nodulejax.runtime.keys: named PRNG streams, one key per (seed, stream, item)."""

import jax
import numpy as np

from nodulejax.runtime.keys import STREAMS, item_keys, stream_key


def test_streams_are_distinct_and_keys_depend_only_on_their_item():
    assert len(set(STREAMS.values())) == len(STREAMS)
    k = item_keys(0, STREAMS["pool/noise"], np.arange(6))
    np.testing.assert_array_equal(item_keys(0, STREAMS["pool/noise"], [4, 5]), k[4:])
    assert not np.array_equal(item_keys(1, STREAMS["pool/noise"], [0]), k[:1])
    assert not np.array_equal(item_keys(0, STREAMS["stress/noise"], [0]), k[:1])
    base = stream_key(0, "pool/noise")
    np.testing.assert_array_equal(np.asarray(jax.random.fold_in(base, 3)), k[3])
