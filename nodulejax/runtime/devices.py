"""Host CPU devices and batch sharding: run independent examples on every core; what the
host CPU is (:func:`host_cpu`, recorded with every report).

Why (benchmarks/RESULTS.md, "one XLA device per core, the batch split over them"): XLA:CPU runs
one executable's small 3D-CNN ops (demo FPR, 16^3 patches, 4-56 channels) with little intra-op
parallelism, so on a 2-core machine one device keeps about one core busy. Splitting the host
into one XLA CPU device per core (``jax_num_cpu_devices``) and sharding the batch axis over
them (GSPMD, ``NamedSharding(mesh, P("data"))``) runs the two halves of a batch side by side.
PGD is per-example by contract (:mod:`nodulejax.adversarial.pgd`), so a sharded batch computes
the same function; the floating point may differ in the last bits (each device compiles its own
half-batch).

Call :func:`configure_cpu_devices` before the first JAX computation (the entry points
``train.py`` / ``attack.py`` do, from ``config.runtime.cpu_devices``); afterwards
:func:`batch_mesh` returns the 1-D ``("data",)`` mesh over the local devices, or ``None``
with one device (then nothing is sharded), :func:`mesh_for` the mesh of the devices that
split a given batch evenly. The training loop's data parallelism
(:mod:`nodulejax.runtime.sharding`, multi-host feeding on top) uses these meshes and placements.
"""

from __future__ import annotations

import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nodulejax.errors import ConfigError

__all__ = ["DATA_AXIS", "ISA_FLAGS", "host_cpu", "configure_cpu_devices", "configure_from",
           "make_mesh", "replicated", "batch_sharding", "devices_for_batch", "batch_mesh",
           "mesh_for", "put_batch", "replicate", "gather"]

DATA_AXIS = "data"


ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "sve",
             "asimd")  # the vector extensions XLA:CPU's code generator may target


def host_cpu(cpuinfo: str | None = None) -> str:
    """The host CPU as the study's results depend on it, e.g. ``"AMD EPYC (cpu family 25,
    model 1; avx avx2 fma), 2 cores"``.

    XLA:CPU compiles for the host's vector extensions, so the same seed and code give the same
    bits on one CPU type (tests/study) and may differ in the last bits, and from there in a
    whole training run, on another (measured: benchmarks/RESULTS.md, "Same seed, another
    CPU"). ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when None; elsewhere
    ``platform.processor()``).
    """
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    first = {}
    for line in cpuinfo.splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip() not in first:
            first[k.strip()] = v.strip()
    name = first.get("model name") or platform.processor() or "unknown CPU"
    ident = [f"{k} {first[k]}" for k in ("cpu family", "model") if k in first]
    flags = set((first.get("flags") or first.get("Features") or "").split())
    isa = [f for f in ISA_FLAGS if f in flags]
    detail = "; ".join(x for x in (", ".join(ident), " ".join(isa)) if x)
    return f"{name}{f' ({detail})' if detail else ''}, {os.cpu_count()} cores"


def _backends_started() -> bool:
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())


def configure_cpu_devices(n: int | str = "auto") -> int:
    """Ask XLA for ``n`` host CPU devices ("auto": one per core available to this process).

    Must run before JAX initialises its backends; returns the CPU device count in effect.
    ``XLA_FLAGS`` with ``--xla_force_host_platform_device_count`` takes precedence. After
    start-up, asking for the count in effect is a no-op and asking for another one raises
    ConfigError (XLA cannot re-split a started host), except when nobody configured it
    (JAX's default, one device): then a warning is logged and the run goes on with one. On a
    GPU/TPU host this only sets the (unused) CPU device count.
    """
    if n == "auto":
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config.runtime.cpu_devices={n!r}: expected 'auto' or an int >= 1") from None
    if n < 1:
        raise ConfigError(f"config.runtime.cpu_devices={n}: expected 'auto' or an int >= 1")
    forced = re.search(r"--xla_force_host_platform_device_count=(\d+)",
                       os.environ.get("XLA_FLAGS", ""))
    if forced:  # the user's XLA_FLAGS already split the host: keep it
        return int(forced.group(1))
    if not _backends_started():
        jax.config.update("jax_num_cpu_devices", n)
        return n
    have = len(jax.devices("cpu"))
    if have != n:
        if jax.config.jax_num_cpu_devices != -1:
            raise ConfigError(
                f"config.runtime.cpu_devices={n}: JAX already started with {have} CPU devices; "
                "set it before the first JAX computation")
        logging.warning("JAX started before configure_cpu_devices(%d): running on %d CPU "
                        "device(s)", n, have)
    return have


def configure_from(config) -> int:
    """:func:`configure_cpu_devices` with ``config.runtime.cpu_devices`` (default "auto"):
    the first call of the entry points (train.py, attack.py)."""
    return configure_cpu_devices(config.get("runtime", {}).get("cpu_devices", "auto"))


_MESHES: dict[tuple, Mesh] = {}


def make_mesh(devs=None) -> Mesh:
    """1-D mesh with axis ``"data"`` over ``devs`` (default: every device, all hosts);
    one Mesh object per device list."""
    devs = list(jax.devices() if devs is None else devs)
    key = tuple((d.platform, d.id) for d in devs)
    if key not in _MESHES:
        _MESHES[key] = Mesh(np.asarray(devs), (DATA_AXIS,))
    return _MESHES[key]


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def devices_for_batch(batch_size: int, devs=None) -> list:
    """The devices a batch of ``batch_size`` is split over: the largest leading group of
    ``devs`` whose count divides it (all of them when it divides evenly; e.g. batch 6 on 4
    devices -> 3, batch 5 -> 1). ``devs`` defaults to every device, and on several hosts to
    all of them whatever the size (each host feeds its own share, ``train.sharding``)."""
    if devs is None:
        devs = jax.devices()
        if jax.process_count() > 1:
            return list(devs)
    devs = list(devs)
    if batch_size <= 0:
        return devs
    n = max(k for k in range(1, len(devs) + 1) if batch_size % k == 0)
    return devs[:n]


def batch_mesh() -> Mesh | None:
    """The ``("data",)`` mesh over the default backend's local devices; None with one."""
    devs = jax.local_devices()
    return make_mesh(devs) if len(devs) > 1 else None


def mesh_for(batch_size: int) -> Mesh | None:
    """Mesh over the local devices that split a batch of ``batch_size`` evenly
    (:func:`devices_for_batch`); None when that is a single device."""
    devs = devices_for_batch(batch_size, jax.local_devices())
    return make_mesh(devs) if len(devs) > 1 else None


def put_batch(tree, mesh: Mesh):
    """Place every (on-device or host) array of ``tree`` with its leading (batch) axis split
    over ``mesh`` (this process's devices; see ``train.sharding.shard_batch`` for hosts)."""
    return jax.device_put(tree, batch_sharding(mesh))


def replicate(tree, mesh: Mesh):
    """Place every leaf (params, optimiser state, keys) whole on every device of ``mesh``.

    On several hosts ``jax.device_put`` refuses an on-device array for a mesh that spans
    other processes' devices, so each leaf goes through the host (a typed PRNG key as its
    key data); every process holds the same values (same seed, same checkpoint)."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(put, tree)


def gather(tree):
    """Bring (sharded) arrays back as one uncommitted default-device array each, as
    unsharded code has them (they then mix with arrays on any device placement)."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), tree)
