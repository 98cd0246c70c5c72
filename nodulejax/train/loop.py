"""The generic, model-agnostic training loop every stage trainer plugs into.

``fit`` owns what all stages share: exact resume from the latest Orbax checkpoint, jitted
steps with explicit per-step keys ``jax.random.fold_in(key, step)``, data parallelism over
a device mesh (``nodulejax.runtime.sharding``), host-side prefetch
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

from nodulejax.errors import ConfigError
from nodulejax.runtime import memory
from nodulejax.runtime import sharding as shd
from nodulejax.runtime.checkpoint import RESUMABLE_FIELDS, ModelCheckpoints, model_dir
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


def _default_mesh(batch_fn, num_steps: int):
    """One host: the devices that split the batch evenly; several hosts: every device."""
    b0 = _batch_size(batch_fn(0)) if num_steps > 0 and jax.process_count() == 1 else 0
    return shd.make_mesh(shd.devices_for_batch(b0))


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


@dataclasses.dataclass(frozen=True)
class _Options:
    """The loop's cadence and early-stopping settings (resolved from args and config)."""

    log_every: int
    ckpt_every: int
    eval_every: int
    best_metric: str | None
    best_mode: str
    patience: int

    @classmethod
    def resolve(cls, config, num_steps: int, eval_fn, *, eval_every: int, best_metric,
                best_mode: str, patience: int, log_every, ckpt_every) -> _Options:
        if num_steps < 0:
            raise ConfigError(f"num_steps must be >= 0, got {num_steps}")
        if best_metric is not None and eval_fn is None:
            raise ConfigError("best_metric needs an eval_fn")
        if eval_fn is not None and eval_every <= 0:
            eval_every = max(num_steps, 1)  # evaluate after the last step only
        return cls(log_every=log_every or _cfg(config, "train", "log_every", 50),
                   ckpt_every=ckpt_every or _cfg(config, "ckpt", "every", 500),
                   eval_every=eval_every, best_metric=best_metric, best_mode=best_mode,
                   patience=patience)


@dataclasses.dataclass
class _Run:
    """The mutable state of one ``fit`` invocation: model state, key, position, loop state
    (best metric, evaluations without improvement; saved in checkpoints), logs and timing."""

    ckpt: ModelCheckpoints
    state: Any
    key: Any
    start: int = 0
    step: int = 0
    last_saved: int = -1
    resumed_from: int | None = None
    loop_state: dict = dataclasses.field(default_factory=lambda: {
        "best": None, "best_step": None, "bad_evals": 0, "stopped": False})
    pending: list = dataclasses.field(default_factory=list)
    eval_history: list = dataclasses.field(default_factory=list)
    last_metrics: dict = dataclasses.field(default_factory=dict)
    t_first: float | None = None
    t_end: float | None = None
    n_timed: int = 0
    ex_per_step: int = 0
    t_log: float = dataclasses.field(default_factory=time.perf_counter)
    n_log: int = 0

    def resume(self, num_steps: int) -> None:
        """Restore state, key, position and loop state from the latest checkpoint, if any."""
        restored = self.ckpt.restore_latest(self.state)
        if restored is not None:
            self.state, self.start = restored.state, restored.data_position
            self.resumed_from = restored.step
            self.key = restored.key if restored.key is not None else self.key
            self.loop_state.update(restored.loop_state)
        self.step = self.start
        self.last_saved = self.resumed_from if self.resumed_from is not None else -1

    def after_step(self, metrics) -> None:
        """Count the step; the first one of this invocation (compiling) is not timed."""
        self.step += 1
        self.pending.append(metrics)
        self.n_log += 1
        if self.step == self.start + 1:
            jax.block_until_ready(metrics)
            memory.release_freed()  # the compiler's freed heap (~400 MB at the demo sizes)
            self.t_first = time.perf_counter()
            self.t_log, self.n_log = self.t_first, 0
        elif self.t_first is not None:
            self.n_timed += 1

    def log(self, opt: _Options, num_steps: int, logger, lr_fn) -> None:
        """Every ``log_every`` steps (and the last): mean train metrics, throughput, lr."""
        if not (self.step % opt.log_every == 0 or self.step == num_steps):
            return
        vals = jax.device_get(self.pending)
        self.pending = []
        m = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
        now = time.perf_counter()
        if self.n_log:
            m["steps_per_sec"] = self.n_log / max(now - self.t_log, 1e-9)
            m["examples_per_sec"] = m["steps_per_sec"] * self.ex_per_step
        self.t_log, self.n_log = now, 0
        if lr_fn is not None:
            m["lr"] = float(lr_fn(self.step - 1))
        self.last_metrics = m
        logger.write(self.step, m, "train")

    def evaluate(self, opt: _Options, eval_fn, logger) -> None:
        """Run ``eval_fn``, log it, keep the best checkpoint, count toward early stopping."""
        ev = {k: float(v) for k, v in eval_fn(self.state, self.step).items()}
        self.eval_history.append((self.step, ev))
        logger.write(self.step, ev, "val")
        if opt.best_metric is None:
            return
        if opt.best_metric not in ev:
            raise ConfigError(f"eval_fn returned {sorted(ev)}, no {opt.best_metric!r}")
        ls = self.loop_state
        if _improved(ev[opt.best_metric], ls["best"], opt.best_mode):
            ls.update(best=ev[opt.best_metric], best_step=self.step, bad_evals=0)
            self.ckpt.save_best(self.step, self.state, key=self.key, data_position=self.step,
                                loop_state=ls, metrics=ev)
        else:
            ls["bad_evals"] += 1
            if opt.patience and ls["bad_evals"] >= opt.patience:
                ls["stopped"] = True

    def save(self, final: bool = False) -> None:
        if self.step != self.last_saved:
            self.ckpt.save(self.step, self.state, key=self.key, data_position=self.step,
                           loop_state=self.loop_state, metrics=self.last_metrics)
            self.last_saved = self.step
        if final:
            self.ckpt.wait()

    def state_intact(self) -> bool:
        return not any(getattr(x, "is_deleted", lambda: False)()
                       for x in jax.tree.leaves(self.state))

    def result(self) -> FitResult:
        sps = (self.n_timed / (self.t_end - self.t_first)
               if (self.t_first is not None and self.n_timed) else float("nan"))
        ls = self.loop_state
        return FitResult(state=self.state, step=self.step, key=self.key,
                         resumed_from=self.resumed_from, best_metric=ls["best"],
                         best_step=ls["best_step"], stopped_early=bool(ls["stopped"]),
                         steps_per_sec=sps, last_metrics=self.last_metrics,
                         eval_history=self.eval_history)


def _train(run: _Run, opt: _Options, step_fn, feeder, logger, signals, *, num_steps: int,
           eval_fn, lr_fn, on_step) -> None:
    """The step loop of :func:`fit`: step, log, evaluate, checkpoint; save on the way out."""
    try:
        while run.step < num_steps and not run.loop_state["stopped"]:
            batch = next(feeder)
            run.ex_per_step = run.ex_per_step or _batch_size(batch) * jax.process_count()
            run.state, metrics = step_fn(run.state, batch, run.key, np.int32(run.step))
            run.after_step(metrics)
            logger.advance()
            if on_step is not None:
                on_step(run.step, run.state)
            run.log(opt, num_steps, logger, lr_fn)
            if eval_fn is not None and opt.eval_every and (
                    run.step % opt.eval_every == 0 or run.step == num_steps):
                run.evaluate(opt, eval_fn, logger)
            if (run.step % opt.ckpt_every == 0 or run.step == num_steps
                    or run.loop_state["stopped"]):
                run.save()
            if signals.received is not None:
                run.save(final=True)
                sig = signals.received
                if sig == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + int(sig))
        jax.block_until_ready(run.state)
        run.t_end = time.perf_counter()
        run.save(final=True)
    except (KeyboardInterrupt, SystemExit):
        if run.step != run.last_saved and run.state_intact():
            run.save(final=True)
        raise
    except BaseException:
        if run.step != run.last_saved and run.state_intact():
            try:
                run.save(final=True)
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        raise


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
    opt = _Options.resolve(config, num_steps, eval_fn, eval_every=eval_every,
                           best_metric=best_metric, best_mode=best_mode, patience=patience,
                           log_every=log_every, ckpt_every=ckpt_every)
    prefetch = _cfg(config, "data", "prefetch", 2) if prefetch is None else prefetch
    num_workers = num_workers or _cfg(config, "data", "num_workers", 1)
    progress = _cfg(config, "train", "progress", True) if progress is None else progress
    mesh = mesh if mesh is not None else _default_mesh(batch_fn, num_steps)
    ckpt = ModelCheckpoints(
        model_dir(workdir, model_name), config=config, keep=keep or _cfg(config, "ckpt", "keep", 3),
        best_metric=best_metric, best_mode=best_mode, resumable_fields=resumable_fields,
        async_save=_cfg(config, "ckpt", "async_save", True) if async_save is None else async_save,
        relevant_fields=relevant_fields)
    run = _Run(ckpt=ckpt, state=shd.replicate(state, mesh), key=key)
    run.resume(num_steps)
    run.key = shd.replicate(run.key, mesh)
    step_fn = _jitted(train_step, donate)
    logger = MetricLogger(logdir or f"{workdir}/logs/{model_name}", total_steps=num_steps,
                          start_step=run.start, progress=progress, desc=model_name)
    signals = _Signals(handle_signals)
    feeder = Prefetcher(lambda i: shd.shard_batch(batch_fn(i), mesh), start=run.start,
                        stop=num_steps, depth=prefetch, num_workers=num_workers)
    try:
        _train(run, opt, step_fn, feeder, logger, signals, num_steps=num_steps,
               eval_fn=eval_fn, lr_fn=lr_fn, on_step=on_step)
    finally:
        signals.restore()
        feeder.close()
        logger.close()
        ckpt.close()
    return run.result()
