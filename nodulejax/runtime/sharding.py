"""Data parallelism with ``jax.sharding``: one Mesh over every device, batch split on axis 0.

Single machine: ``make_mesh()`` spans all local devices (1 CPU, 8 GPUs, or one host CPU
device per core, ``config.runtime.cpu_devices``, :mod:`nodulejax.runtime.devices`); ``fit`` uses the
largest group of them that divides the batch size (``devices_for_batch``); parameters and
optimiser state are replicated (``NamedSharding(mesh, P())``), each batch is split along
its leading axis (``NamedSharding(mesh, P("data"))``), and the jitted step's gradient
all-reduce is inserted by XLA. Nothing changes for one device.

Multi-host (several machines, each with its accelerators), set ``config.train.multi_host =
True`` (``--config.train.multi_host=True``) and start the same command on every host.
``initialize_distributed`` then calls ``jax.distributed.initialize()`` (cross-process
collectives on CPU hosts: JAX's default, gloo), configured by:

* on Cloud TPU pods and SLURM (``srun``) clusters: nothing, it auto-detects;
* elsewhere, the environment variables (JAX itself reads the address and the device ids;
  ``initialize_distributed`` passes the count and the rank, which it does not read):
    ``JAX_COORDINATOR_ADDRESS=host0:1234``   address of process 0 (reachable by all),
    ``JAX_NUM_PROCESSES=4``                  number of processes (usually one per host),
    ``JAX_PROCESS_ID=0..3``                  this process's rank,
  optionally ``JAX_LOCAL_DEVICE_IDS=0,1,...`` to restrict the visible local devices.

The mesh then spans ``jax.devices()`` (all hosts). Each process loads only its share of
every global batch (``BatchIndices.take(jax.process_index(), jax.process_count())``, or
``process_share`` for batches drawn whole) and
``shard_batch`` assembles the global array with ``jax.make_array_from_process_local_data``.
The global batch size must be divisible by the total device count. Checkpoints go through
orbax, which coordinates the hosts (use a filesystem every host sees, e.g. GCS or NFS);
only process 0 writes logs. ``tests/test_multihost.py`` runs this path with two processes
on one machine (CPU, coordinator on 127.0.0.1).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from nodulejax.errors import ConfigError
from nodulejax.runtime.devices import (
    DATA_AXIS,
    batch_sharding,
    devices_for_batch,
    make_mesh,
    replicate,
    replicated,
)

__all__ = ["DATA_AXIS", "initialize_distributed", "process_share", "make_mesh", "replicated",
           "batch_sharding",
           "replicate", "shard_batch", "devices_for_batch"]
_initialized = False


def initialize_distributed(config: Any = None, *, multi_host: bool | None = None) -> bool:
    """Call ``jax.distributed.initialize()`` once when ``config.train.multi_host`` is set.

    Must run before any other JAX call in the process. Returns whether it initialised.
    """
    global _initialized
    if multi_host is None:
        multi_host = bool(config is not None and config.get("train", {}).get("multi_host", False))
    if not multi_host or _initialized:
        return False
    # jax.distributed.initialize reads JAX_COORDINATOR_ADDRESS (and JAX_LOCAL_DEVICE_IDS)
    # itself but not the process count and rank: pass those on, or leave them to the
    # cluster auto-detection (TPU pods, SLURM) when unset.
    kwargs = {}
    for var, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        value = os.environ.get(var)
        if value is not None:
            try:
                kwargs[arg] = int(value)
            except ValueError:
                raise ConfigError(f"environment variable {var}={value!r}: expected an "
                                  "integer") from None
    jax.distributed.initialize(**kwargs)
    _initialized = True
    return True


def process_share(global_batch: int) -> slice:
    """The rows of a global batch of ``global_batch`` examples this process loads: a
    contiguous ``1 / jax.process_count()`` of it, in process order (the whole batch on one
    host); the same split as ``sampler.BatchIndices.take``."""
    n, i = jax.process_count(), jax.process_index()
    if global_batch % n:
        raise ConfigError(f"batch size {global_batch} is not divisible by process_count {n}")
    return slice(i * global_batch // n, (i + 1) * global_batch // n)


def shard_batch(tree, mesh: Mesh):
    """Split this process's batch (leading axis) over its devices of ``mesh``.

    Each leaf's leading dimension must be divisible by the process's local device count;
    in multi-host runs the leaves are this process's share and the global batch is their
    concatenation in process order.
    """
    sharding = batch_sharding(mesh)
    n_local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])

    def put(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % n_local:
            raise ConfigError(
                f"batch leaf of shape {x.shape} cannot be split over {n_local} local devices: "
                "the per-process batch size must be a multiple of the local device count")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(put, tree)
