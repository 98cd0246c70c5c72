"""The generic, model-agnostic training loop every stage trainer plugs into (issue 5).

``fit`` owns what all stages share: exact resume from the latest Orbax checkpoint, jitted
steps with explicit per-step keys ``jax.random.fold_in(key, step)``, data parallelism over
a device mesh (``nodulejax.train.sharding``), host-side prefetch
(``nodulejax.train.sampler.Prefetcher``), logging (``nodulejax.train.logger``), periodic
and final checkpoints, best-by-metric checkpoints, early stopping, and saving on SIGTERM /
Ctrl-C. A stage trainer supplies only::

    def train_step(state, batch, key) -> (new_state, {"loss": scalar, ...})   # pure, jittable
    def batch_fn(step) -> batch           # host pytree of arrays, a pure function of step
    def eval_fn(state, step) -> {"auc": float, ...}   # optional, host side

Exact resume: batch ``i`` is ``batch_fn(i)`` (pure in ``i``, see ``sampler``), the key of
step ``i`` is ``fold_in(key, i)``, and the checkpoint holds the state, the key, the step and
the loop's own state (best metric, evaluations without improvement), so a run killed at any
point and restarted from its last checkpoint reproduces the uninterrupted run bitwise (on
the same device count and backend).
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from nodulejax.checkpoint import RESUMABLE_FIELDS, ModelCheckpoints, model_dir
from nodulejax.errors import ConfigError
from nodulejax.train import sharding as shd
from nodulejax.train.logger import MetricLogger
from nodulejax.train.sampler import Prefetcher


@dataclasses.dataclass
class FitResult:
    """What ``fit`` ends with. ``state`` is the final (replicated) state."""

    state: Any
    step: int  # steps completed
    key: Any  # the run's base key (restored on resume)
    resumed_from: int | None  # checkpoint step resumed from, None for a fresh run
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    steps_per_sec: float  # this invocation, first (compiling) step excluded; nan if < 2 steps
    last_metrics: dict  # the last logged train metrics
    eval_history: list  # [(step, {metric: value})] of this invocation


@functools.lru_cache(maxsize=32)
def _jitted(train_step: Callable, donate: bool):
    def step_fn(state, batch, key, step):
        return train_step(state, batch, jax.random.fold_in(key, step))

    return jax.jit(step_fn, donate_argnums=(0,) if donate else ())


def _cfg(config, block: str, field: str, default):
    try:
        return config[block][field]
    except (KeyError, TypeError, AttributeError):
        return default


def _batch_size(batch) -> int:
    leaves = jax.tree.leaves(batch)
    return int(leaves[0].shape[0]) if leaves and np.ndim(leaves[0]) else 0


def _improved(value: float, best: float | None, mode: str) -> bool:
    if not np.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


class _Signals:
    """SIGTERM/SIGINT -> a flag checked between steps (a second Ctrl-C raises at once)."""

    def __init__(self, enabled: bool):
        self.received: int | None = None
        self._old = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def fit(
    train_step: Callable,
    state: Any,
    batch_fn: Callable[[int], Any],
    *,
    num_steps: int,
    workdir: str,
    model_name: str,
    config: Any,
    key: Any,
    eval_fn: Callable[[Any, int], Mapping[str, float]] | None = None,
    eval_every: int = 0,
    best_metric: str | None = None,
    best_mode: str = "max",
    patience: int = 0,
    log_every: int | None = None,
    ckpt_every: int | None = None,
    keep: int | None = None,
    prefetch: int | None = None,
    num_workers: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    lr_fn: Callable[[int], float] | None = None,
    donate: bool = True,
    async_save: bool | None = None,
    progress: bool | None = None,
    logdir: str | None = None,
    resumable_fields=RESUMABLE_FIELDS,
    relevant_fields=None,
    handle_signals: bool = True,
    on_step: Callable[[int, Any], None] | None = None,
) -> FitResult:
    """Train ``num_steps`` steps (in total, counting those of a resumed run).

    Args:
      train_step: ``(state, batch, key) -> (state, metrics)``; jitted here (cached per
        function), ``key = fold_in(key, step)`` with ``step`` the 0-based index of the step.
        ``metrics`` is a dict of scalars (``"loss"``, ...; an ``"lr"`` entry is logged as is).
      state: initial pytree (params, optimiser state, ...). Replicated over the mesh; with
        ``donate=True`` its buffers are consumed by the first step (do not reuse it).
      batch_fn: ``step -> batch`` host pytree with a leading batch axis (this process's share
        in multi-host runs); must be a pure function of ``step`` for exact resume.
      num_steps: total steps; a resumed run continues to this number.
      workdir, model_name: checkpoints in ``WORKDIR/checkpoints/<model_name>`` and logs in
        ``logdir`` (default ``WORKDIR/logs/<model_name>``).
      config: the run config (stored in every checkpoint, compared on resume: a resumed run
        whose config differs in a field matching ``relevant_fields`` (None: any field) and
        not ``resumable_fields`` raises CheckpointError naming the fields).
        ``log_every``, ``ckpt_every``, ``keep``, ``prefetch``, ``num_workers`` default to
        ``config.train.log_every``, ``config.ckpt.every``, ``config.ckpt.keep``,
        ``config.data.prefetch``, ``config.data.num_workers``; ``async_save`` and
        ``progress`` to ``config.ckpt.async_save`` and ``config.train.progress``.
      key: base PRNG key (typed or raw); restored from the checkpoint on resume.
      eval_fn: ``(state, step) -> {metric: float}`` run every ``eval_every`` steps and after
        the last step; logged as ``val/<metric>``.
      best_metric, best_mode: metric (``"max"`` or ``"min"``) deciding the ``best/`` checkpoint
        and early stopping; needs ``eval_fn``.
      patience: stop after this many evaluations without improvement (0: never).
      mesh: device mesh (default: the devices that split ``batch_fn(0)``'s batch evenly,
        ``sharding.make_mesh(sharding.devices_for_batch(B))``: all of them when B divides).
      lr_fn: ``step -> learning rate`` (e.g. the optax schedule), logged as ``lr``.
      async_save: orbax async checkpoint writes.
      on_step: host callback ``(step_done, state)`` after each step (tests, custom hooks).

    Returns: FitResult.

    Interruption: SIGTERM or Ctrl-C finish the current step, save a checkpoint, wait for it
    to be on disk, then raise ``SystemExit(143)`` (SIGTERM) or ``KeyboardInterrupt``. Any
    other exception saves the last completed step (if its state is intact) and re-raises.
    """
    if num_steps < 0:
        raise ConfigError(f"num_steps must be >= 0, got {num_steps}")
    if best_metric is not None and eval_fn is None:
        raise ConfigError("best_metric needs an eval_fn")
    if eval_fn is not None and eval_every <= 0:
        eval_every = max(num_steps, 1)  # evaluate after the last step only
    log_every = log_every or _cfg(config, "train", "log_every", 50)
    ckpt_every = ckpt_every or _cfg(config, "ckpt", "every", 500)
    keep = keep or _cfg(config, "ckpt", "keep", 3)
    prefetch = _cfg(config, "data", "prefetch", 2) if prefetch is None else prefetch
    num_workers = num_workers or _cfg(config, "data", "num_workers", 1)
    async_save = _cfg(config, "ckpt", "async_save", True) if async_save is None else async_save
    progress = _cfg(config, "train", "progress", True) if progress is None else progress
    if mesh is None:
        # one host: the devices that split the batch evenly; several: every device
        b0 = _batch_size(batch_fn(0)) if num_steps > 0 and jax.process_count() == 1 else 0
        mesh = shd.make_mesh(shd.devices_for_batch(b0))

    ckpt = ModelCheckpoints(model_dir(workdir, model_name), config=config, keep=keep,
                            best_metric=best_metric, best_mode=best_mode,
                            async_save=async_save, resumable_fields=resumable_fields,
                            relevant_fields=relevant_fields)
    state = shd.replicate(state, mesh)
    restored = ckpt.restore_latest(state)
    loop_state = {"best": None, "best_step": None, "bad_evals": 0, "stopped": False}
    start, resumed_from = 0, None
    if restored is not None:
        state, start, resumed_from = restored.state, restored.data_position, restored.step
        key = restored.key if restored.key is not None else key
        loop_state.update(restored.loop_state)
    key = shd.replicate(key, mesh)
    step_fn = _jitted(train_step, donate)

    logger = MetricLogger(logdir or f"{workdir}/logs/{model_name}", total_steps=num_steps,
                          start_step=start, progress=progress, desc=model_name)
    signals = _Signals(handle_signals)
    feeder = Prefetcher(lambda i: shd.shard_batch(batch_fn(i), mesh), start=start,
                        stop=num_steps, depth=prefetch, num_workers=num_workers)
    step, last_saved = start, (resumed_from if resumed_from is not None else -1)
    pending, eval_history, last_metrics = [], [], {}
    t_first, t_end, n_timed, ex_per_step = None, None, 0, 0
    t_log, n_log = time.perf_counter(), 0

    def save(final=False):
        nonlocal last_saved
        if step != last_saved:
            ckpt.save(step, state, key=key, data_position=step, loop_state=loop_state,
                      metrics=last_metrics)
            last_saved = step
        if final:
            ckpt.wait()

    def state_intact():
        return not any(getattr(x, "is_deleted", lambda: False)()
                       for x in jax.tree.leaves(state))

    try:
        while step < num_steps and not loop_state["stopped"]:
            batch = next(feeder)
            ex_per_step = ex_per_step or _batch_size(batch) * jax.process_count()
            state, metrics = step_fn(state, batch, key, np.int32(step))
            step += 1
            pending.append(metrics)
            n_log += 1
            if step == start + 1:
                jax.block_until_ready(metrics)
                t_first = time.perf_counter()
                t_log, n_log = t_first, 0
            elif t_first is not None:
                n_timed += 1
            logger.advance()
            if on_step is not None:
                on_step(step, state)

            if step % log_every == 0 or step == num_steps:
                vals = jax.device_get(pending)
                pending = []
                last_metrics = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
                now = time.perf_counter()
                if n_log:
                    last_metrics["steps_per_sec"] = n_log / max(now - t_log, 1e-9)
                    last_metrics["examples_per_sec"] = last_metrics["steps_per_sec"] * ex_per_step
                t_log, n_log = now, 0
                if lr_fn is not None:
                    last_metrics["lr"] = float(lr_fn(step - 1))
                logger.write(step, last_metrics, "train")

            if eval_fn is not None and eval_every and (step % eval_every == 0 or step == num_steps):
                ev = {k: float(v) for k, v in eval_fn(state, step).items()}
                eval_history.append((step, ev))
                logger.write(step, ev, "val")
                if best_metric is not None:
                    if best_metric not in ev:
                        raise ConfigError(f"eval_fn returned {sorted(ev)}, no {best_metric!r}")
                    if _improved(ev[best_metric], loop_state["best"], best_mode):
                        loop_state.update(best=ev[best_metric], best_step=step, bad_evals=0)
                        ckpt.save_best(step, state, key=key, data_position=step,
                                       loop_state=loop_state, metrics=ev)
                    else:
                        loop_state["bad_evals"] += 1
                        if patience and loop_state["bad_evals"] >= patience:
                            loop_state["stopped"] = True

            if step % ckpt_every == 0 or step == num_steps or loop_state["stopped"]:
                save()
            if signals.received is not None:
                save(final=True)
                sig = signals.received
                if sig == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + int(sig))
        jax.block_until_ready(state)
        t_end = time.perf_counter()
        save(final=True)
    except (KeyboardInterrupt, SystemExit):
        if step != last_saved and state_intact():
            save(final=True)
        raise
    except BaseException:
        if step != last_saved and state_intact():
            try:
                save(final=True)
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        raise
    finally:
        signals.restore()
        feeder.close()
        logger.close()
        ckpt.close()

    sps = n_timed / (t_end - t_first) if (t_first is not None and n_timed) else float("nan")
    return FitResult(state=state, step=step, key=key, resumed_from=resumed_from,
                     best_metric=loop_state["best"], best_step=loop_state["best_step"],
                     stopped_early=bool(loop_state["stopped"]), steps_per_sec=sps,
                     last_metrics=last_metrics, eval_history=eval_history)
