"""nodulejax.runtime.devices: host CPU devices (one per core) configured at start-up."""


import jax.numpy as jnp
import pytest

from nodulejax.errors import ConfigError
from nodulejax.runtime import devices


def test_configure_cpu_devices_after_start():
    """Once JAX runs, asking for the count in effect is a no-op; another count or a bad value
    is a ConfigError naming config.runtime.cpu_devices."""

    jnp.zeros(1).block_until_ready()
    assert devices.configure_cpu_devices(2) == 2
    with pytest.raises(ConfigError, match="cpu_devices"):
        devices.configure_cpu_devices(3)
    for bad in ("many", 0):
        with pytest.raises(ConfigError, match="cpu_devices"):
            devices.configure_cpu_devices(bad)
