"""Batched projected gradient descent (PGD) engine, shared by every attack in the project.

Paper Sections 3.2-3.3, Eq. (9): ``delta := P(delta + alpha * grad_delta L_FPR)``, with ``P`` the
projection onto the eps-ball (and here, in addition, onto the input's value bounds). PGD
*maximises* ``loss_fn``; the attacks in :mod:`nodulejax.adversarial.attacks` pick the loss
and its label.

Semantics (Madry et al. 2018, the "standard PGD" the paper uses):

* ``norm="linf"``: ``x <- x + step * sign(g)``, then ``delta`` clipped to ``[-eps, eps]``
  element-wise; random start ``delta ~ U(-eps, eps)``.
* ``norm="l2"``: ``x <- x + step * g / ||g||_2`` (norm over all non-batch axes, per example),
  then ``delta <- delta * min(1, eps / ||delta||_2)``; random start uniform in the L2 ball.
* After every step ``x`` is clipped to ``bounds`` (``None``: unbounded, e.g. latent codes).
  If the clean input lies inside ``bounds`` (a precondition), clipping never takes ``x`` out of
  its eps-ball, so after every step both constraints hold.
* ``eps`` and ``step_size`` are scalars or per-example arrays of shape ``(B,)``.
* The loop (``loop=``): ``"device"`` = ``lax.fori_loop`` inside one ``jax.jit`` (the number
  of steps is a traced value, so different ``steps`` reuse the same executable); ``"host"`` = a
  Python loop over one jitted PGD step (the same step function, so the same iterates);
  ``"auto"`` (default) = host on the CPU backend, device elsewhere, and always device when
  called under a trace (e.g. in-loop PGD inside a jitted training step). Why: XLA:CPU runs
  the convolutions of a ``while`` body slower than the same step jitted on its own
  (benchmarks/RESULTS.md), while on GPU the device loop saves a launch per step.
* Sharding (``shard=``): ``"auto"`` (default) splits the batch over the local devices when
  there are several (:mod:`nodulejax.runtime.devices`: one XLA CPU device per core, or several
  GPUs), over as many of them as divide ``B`` evenly (``devices.mesh_for``), replicating
  ``loss_args``; the result comes back as one uncommitted default-device array. ``"none"``
  keeps the batch on one device. Never under a trace. On the 2-core CPU this runs the two
  half-batches side by side: one demo PGD step at batch 16, 90-100 ms -> 49-60 ms
  (benchmarks/RESULTS.md, "one XLA device per core, the batch split over them").
  Per-example losses make the sharded attack the same function; XLA compiles each part of
  the batch itself, so the last bits may differ from the one-device run.

**Per-example contract.** ``loss_fn(x, *loss_args)`` must return per-example losses ``(B,)``
where example ``i``'s loss depends on ``x[i]`` only (no BatchNorm in training mode, no
batch-level normalisation, no cross-example attention). PGD differentiates ``sum(loss)``, whose
gradient w.r.t. ``x[i]`` is then exactly example ``i``'s own gradient, so a batch computes the
same thing as B one-example calls at batch-matmul speed. Random starts draw from per-example
keys (``fold_in(key, i)`` for a single key, or a batch of keys ``(B,)`` given by the caller), so
an example's result does not depend on the other examples in the batch; pass per-example keys
if it must not depend on its *position* either (e.g. resumable augmentation pools).

**Compilation cache.** ``loss_fn`` is a static argument of one module-level ``jax.jit``: JAX
keys its executable cache on the function object (identity), ``norm``, ``bounds`` and
``random_start``, plus the shapes of ``x`` and ``loss_args``. Hold on to one ``loss_fn`` object
and pass changing arrays (model parameters, labels) through ``loss_args`` instead of closing
over them in a fresh lambda per call; a fresh closure per call recompiles every time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from nodulejax.errors import ConfigError
from nodulejax.runtime import devices

__all__ = ["pgd", "pgd_with_losses", "per_example_keys"]

LossFn = Callable[..., jax.Array]
_TINY = 1e-12


def _check(norm: str, bounds) -> tuple[str, tuple[float, float] | None]:
    if norm not in ("linf", "l2"):
        raise ConfigError(f"pgd: norm must be 'linf' or 'l2', got {norm!r}")
    if bounds is None:
        return norm, None
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ConfigError(f"pgd: bounds must satisfy lo < hi, got {bounds!r}")
    return norm, (lo, hi)


def per_example_keys(key: jax.Array, batch: int) -> jax.Array:
    """Keys ``(B,)`` for a batch: ``key`` itself if it is already a batch of ``batch`` keys,
    else ``fold_in(key, i)`` for ``i = 0..B-1``. Works for raw ``uint32[2]`` and typed keys."""
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    scalar_ndim = 0 if typed else 1
    if key.ndim == scalar_ndim + 1:
        if key.shape[0] != batch:
            raise ConfigError(f"pgd: got {key.shape[0]} keys for a batch of {batch}")
        return key
    if key.ndim != scalar_ndim:
        raise ConfigError(f"pgd: key of shape {key.shape} is neither one key nor a batch of keys")
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(batch))


def _as_batch(v, batch: int, name: str) -> jax.Array:
    v = jnp.asarray(v, jnp.float32)
    if v.ndim == 0:
        return jnp.full((batch,), v)
    if v.shape != (batch,):
        raise ConfigError(f"pgd: {name} must be a scalar or shape ({batch},), got {v.shape}")
    return v


def _per_example(v: jax.Array, batch: int, ndim: int) -> jax.Array:
    """(B,) -> (B, 1, ..., 1) broadcastable against an (B, ...) array of rank ndim."""
    return v.reshape((batch,) + (1,) * (ndim - 1))


def _l2(v: jax.Array) -> jax.Array:
    """Per-example L2 norm, shape (B, 1, ..., 1)."""
    axes = tuple(range(1, v.ndim))
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))


def _project(x: jax.Array, x0: jax.Array, eps: jax.Array, norm: str, bounds) -> jax.Array:
    delta = x - x0
    if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
    else:
        delta = delta * jnp.minimum(1.0, eps / jnp.maximum(_l2(delta), _TINY))
    x = x0 + delta
    if bounds is not None:
        x = jnp.clip(x, bounds[0], bounds[1])
    return x


def _random_start(keys, x0, eps, norm, bounds):
    def one(k, shape):
        if norm == "linf":
            return jax.random.uniform(k, shape, jnp.float32, -1.0, 1.0)
        # Uniform in the unit L2 ball: gaussian direction, radius u^(1/d).
        k1, k2 = jax.random.split(k)
        g = jax.random.normal(k1, shape, jnp.float32)
        g = g / jnp.maximum(jnp.sqrt(jnp.sum(g * g)), _TINY)
        d = g.size
        return g * jax.random.uniform(k2, (), jnp.float32) ** (1.0 / d)

    unit = jax.vmap(lambda k: one(k, x0.shape[1:]))(keys)
    return _project(x0 + (eps * unit).astype(x0.dtype), x0, eps, norm, bounds)


@partial(jax.jit, static_argnames=("loss_fn", "norm", "bounds", "random_start", "with_losses"))
def _pgd_jit(
    x0, keys, eps, step_size, steps, loss_args, *, loss_fn, norm, bounds, random_start, with_losses
):
    b, nd = x0.shape[0], x0.ndim
    eps = _per_example(eps, b, nd)
    step = _per_example(step_size, b, nd)

    def body(_, x):
        return _step(x, x0, eps, step, loss_args, loss_fn, norm, bounds)

    x = _random_start(keys, x0, eps, norm, bounds) if random_start else x0
    x = jax.lax.fori_loop(0, steps, body, x)
    if not with_losses:
        return x
    return x, loss_fn(x0, *loss_args), loss_fn(x, *loss_args)


def _step(x, x0, eps, step, loss_args, loss_fn, norm, bounds):
    """One PGD iteration (Eq. 9): signed (L-inf) or normalised (L2) ascent, then projection."""
    g = jax.grad(lambda v: jnp.sum(loss_fn(v, *loss_args)))(x)
    if norm == "linf":
        upd = jnp.sign(g)
    else:
        upd = g / jnp.maximum(_l2(g), _TINY)
    return _project(x + (step * upd).astype(x.dtype), x0, eps, norm, bounds)


@partial(jax.jit, static_argnames=("norm", "bounds", "random_start"))
def _host_start(x0, keys, eps, *, norm, bounds, random_start):
    b, nd = x0.shape[0], x0.ndim
    eps = _per_example(eps, b, nd)
    return _random_start(keys, x0, eps, norm, bounds) if random_start else x0


@partial(jax.jit, static_argnames=("loss_fn", "norm", "bounds"))
def _host_step(x, x0, eps, step_size, loss_args, *, loss_fn, norm, bounds):
    b, nd = x0.shape[0], x0.ndim
    return _step(x, x0, _per_example(eps, b, nd), _per_example(step_size, b, nd), loss_args,
                 loss_fn, norm, bounds)


@partial(jax.jit, static_argnames=("loss_fn",))
def _host_losses(x0, x, loss_args, *, loss_fn):
    return loss_fn(x0, *loss_args), loss_fn(x, *loss_args)


def _pgd_host(x0, keys, eps, step_size, steps, loss_args, *, loss_fn, norm, bounds,
              random_start, with_losses):
    x = _host_start(x0, keys, eps, norm=norm, bounds=bounds, random_start=random_start)
    for _ in range(int(steps)):
        x = _host_step(x, x0, eps, step_size, loss_args, loss_fn=loss_fn, norm=norm,
                       bounds=bounds)
    if not with_losses:
        return x
    return (x, *_host_losses(x0, x, loss_args, loss_fn=loss_fn))


LOOPS = ("auto", "device", "host")
SHARDS = ("auto", "none")


def _traced(*trees) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(trees))


def _resolve_loop(loop: str, traced: bool) -> str:
    if loop not in LOOPS:
        raise ConfigError(f"pgd: loop must be one of {LOOPS}, got {loop!r}")
    if traced:
        return "device"
    if loop == "auto":
        return "host" if jax.default_backend() == "cpu" else "device"
    return loop


def _resolve_mesh(shard: str, traced: bool, batch: int):
    """The ("data",) mesh to split the batch over (nodulejax.runtime.devices.mesh_for), or None."""
    if shard not in SHARDS:
        raise ConfigError(f"pgd: shard must be one of {SHARDS}, got {shard!r}")
    if shard == "none" or traced:
        return None
    return devices.mesh_for(batch)


def _run(
    loss_fn, x, key, eps, step_size, steps, norm, bounds, random_start, loss_args, with_losses,
    loop="auto", shard="auto",
):
    norm, bounds = _check(norm, bounds)
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ConfigError(f"pgd: x must be a non-empty batch (B, ...), got shape {x.shape}")
    if steps < 0:
        raise ConfigError(f"pgd: steps must be >= 0, got {steps}")
    b = x.shape[0]
    keys = per_example_keys(key, b)
    # (B,) float32 whatever was given, so scalar vs per-example values share one executable
    eps, step_size = (_as_batch(v, b, name) for v, name in ((eps, "eps"), (step_size, "step_size")))
    loss_args = tuple(loss_args)
    traced = _traced(x, loss_args, steps)
    host = _resolve_loop(loop, traced) == "host"
    mesh = _resolve_mesh(shard, traced, b)
    if mesh is not None:
        x, keys, eps, step_size = devices.put_batch((x, keys, eps, step_size), mesh)
        loss_args = devices.replicate(loss_args, mesh)
    kw = dict(loss_fn=loss_fn, norm=norm, bounds=bounds, random_start=bool(random_start),
              with_losses=with_losses)
    if host:
        out = _pgd_host(x, keys, eps, step_size, steps, loss_args, **kw)
    else:
        out = _pgd_jit(x, keys, eps, step_size, jnp.asarray(steps, jnp.int32), loss_args, **kw)
    return out if mesh is None else devices.gather(out)


def pgd_with_losses(
    loss_fn: LossFn,
    x: jax.Array,
    key: jax.Array,
    *,
    eps,
    step_size,
    steps: int,
    norm: str = "linf",
    bounds: tuple[float, float] | None = (0.0, 1.0),
    random_start: bool = True,
    loss_args: tuple[Any, ...] = (),
    loop: str = "auto",
    shard: str = "auto",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """PGD that also returns per-example losses: ``(x_adv, loss_before, loss_after)``.

    Args:
      loss_fn: ``loss_fn(x, *loss_args) -> (B,)`` per-example losses to *maximise* (see the
        module doc for the per-example contract). Static: keep one function object.
      x: clean inputs ``(B, ...)``: image patches ``(B, P, P, P, 1)`` in [0, 1] or latent codes
        ``(B, L)``. Must lie inside ``bounds``.
      key: one PRNG key (per-example keys via ``fold_in(key, i)``) or a batch of ``B`` keys.
      eps, step_size: radius and step, scalars or ``(B,)`` arrays, in the units of ``x``.
      steps: number of PGD iterations (0 returns the random start, or ``x`` itself).
      norm: ``"linf"`` or ``"l2"``.
      bounds: ``(lo, hi)`` value range of ``x`` or ``None`` (unbounded).
      random_start: start from a uniform point of the eps-ball (inside ``bounds``).
      loss_args: arrays/pytrees passed through to ``loss_fn`` (traced, not static).
      loop: "auto" | "device" | "host" (module docstring); the iterates are the same.
      shard: "auto" | "none": split the batch over the local devices (module docstring).

    Returns:
      ``x_adv`` (same shape and dtype as ``x``), ``loss_fn`` at ``x`` and at ``x_adv`` ``(B,)``.
    """
    return _run(loss_fn, x, key, eps, step_size, steps, norm, bounds, random_start, loss_args, True,
                loop, shard)


def _pgd_kw(loss_fn, x, key, *, with_losses: bool, eps, step_size, steps: int,
            norm: str = "linf", bounds=(0.0, 1.0), random_start: bool = True,
            loss_args: tuple = (), loop: str = "auto", shard: str = "auto"):
    return _run(loss_fn, x, key, eps, step_size, steps, norm, bounds, random_start, loss_args,
                with_losses, loop, shard)


def pgd(loss_fn: LossFn, x: jax.Array, key: jax.Array, **kw) -> jax.Array:
    """Adversarial ``x`` (same shape) maximising ``loss_fn`` inside the eps-ball; see
    :func:`pgd_with_losses` for the keyword arguments (Eq. 9 of the paper)."""
    return _pgd_kw(loss_fn, x, key, with_losses=False, **kw)
