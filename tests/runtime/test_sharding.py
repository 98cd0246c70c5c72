"""nodulejax.runtime.sharding: batches placed on the data mesh, this host's share of a global
batch (the two-process run is tests/runtime/test_multihost.py)."""

import jax
import numpy as np
import pytest

from nodulejax.errors import ConfigError
from nodulejax.runtime.sharding import make_mesh, process_share, shard_batch


def test_batch_must_split_over_devices():
    mesh = make_mesh(jax.devices()[:1])
    assert shard_batch({"x": np.ones((3, 2))}, mesh)["x"].shape == (3, 2)
    with pytest.raises(ConfigError):
        shard_batch({"x": np.float32(1.0)}, mesh)


def test_one_process_owns_the_whole_batch():
    s = process_share(8)
    assert np.arange(8)[s].tolist() == list(range(8))
