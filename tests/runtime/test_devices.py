"""nodulejax.runtime.devices: host CPU devices (one per core) configured at start-up."""

import os

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


def test_host_cpu_names_the_model_family_and_vector_extensions():
    amd = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
           "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n\n"
           "processor\t: 1\ncpu family\t: 99\nmodel name\t: other\n")
    d = devices.host_cpu(amd)
    assert d.startswith("AMD EPYC (cpu family 25, model 1; avx avx2 fma), ")  # first CPU's lines
    assert "avx512f" not in d and d.endswith(f"{os.cpu_count()} cores")
    intel = "model name\t: Intel(R) Xeon(R)\nflags\t: avx avx2 fma avx512f avx512_vnni amx_tile\n"
    assert "avx512f avx512_vnni amx_tile" in devices.host_cpu(intel)
    arm = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n"
    assert "(sve asimd)" in devices.host_cpu(arm)
    assert devices.host_cpu("").endswith("cores")  # no cpuinfo: platform.processor() or unknown
