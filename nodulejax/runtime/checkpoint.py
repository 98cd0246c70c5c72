"""Orbax checkpoints: one manager per model, exact resume, config guard.

Layout (one directory per model, so the baseline and the augmented FPR never mix)::

    WORKDIR/checkpoints/<model_name>/latest/<step>/{state,meta,config}   # the last c.ckpt.keep
    WORKDIR/checkpoints/<model_name>/best/<step>/{state,meta,config}     # the best by metric

``model_name`` is ``model_dir``'s last component: ``"cg"``, ``"cg_ggo"``, ``"rpn"``,
``"fpr_seg"``, ``"fpr_baseline-ce"``, ``"fpr_augmented_beta+syn"``, ``"synth"``...

Each checkpoint holds three orbax items:

* ``state``: the training-state pytree (params, optimiser state, ...) via ``StandardSave``.
  PRNG keys (typed ``jax.random.key`` or raw ``uint32``) inside it are stored as their raw
  key data and re-wrapped on restore, so they come back bitwise (``nodulejax.runtime.keys``).
* ``meta`` (JSON): ``step``, ``data_position`` (the index of the next batch: the sampler's
  batches are a pure function of it, see ``nodulejax.train.sampler``), the loop's own state
  (best metric, evaluations without improvement, ...), the metrics at that step and the
  run's PRNG key (raw ``uint32`` words plus the key implementation name).
* ``config`` (JSON): the full run config, compared on resume.

Best checkpoint: a second orbax manager under ``best/`` with ``max_to_keep=1`` and a
``best_fn`` on the chosen metric; the training loop only writes there when the validation
metric improves, so it always holds the best evaluated state (and its metrics). We keep it
apart from ``latest/`` rather than mixing metric and metric-less checkpoints in one manager
(orbax's ``keep_checkpoints_without_metrics``) because the two retention rules then never
interfere: ``latest/`` is purely "last N", ``best/`` purely "best 1".

Config guard: resuming compares the saved config with the current one field by field
(dotted paths), restricted to the model's ``relevant_fields`` when given (e.g. CG passes
``("seed", "data.*", "cg.*", "runtime.dtype")``). Fields matching ``RESUMABLE_FIELDS`` may
differ (run length, logging, checkpoint cadence, host-side data loading, evaluation-only
settings); any other difference (model, data, optimiser, augmentation, seed, a field present
on one side only) raises ``CheckpointError`` listing every differing field with its saved
and current value.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from nodulejax.errors import CheckpointError, ConfigError, nearest
from nodulejax.experiments import canonical_model_name
from nodulejax.runtime import devices
from nodulejax.runtime.config_tools import config_diff as _config_diff
from nodulejax.runtime.config_tools import config_to_dict
from nodulejax.runtime.keys import decode_key, encode_key, is_typed_key, keys_to_raw, raw_to_keys

# Config fields (fnmatch patterns on dotted paths) allowed to differ between the run that
# wrote a checkpoint and the run that resumes it. Everything else must match exactly.
RESUMABLE_FIELDS: tuple[str, ...] = (
    "name",
    "stage",  # which stage train.py runs does not change a model's training
    "rerun",  # which stages the study redoes
    "ckpt.*",  # checkpoint cadence / retention
    "train.log_every",
    "train.progress",  # the console bar
    "train.multi_host",
    "data.num_workers",  # host-side loading threads
    "data.prefetch",
    "data.root",  # the same data may move on disk
    "runtime.conv_impl",  # same maths, different lowering
    "runtime.cpu_devices",  # same maths, the batch split over more host devices
    "runtime.compilation_cache",  # where compiled executables are kept: the same programs
    "eval.*",  # evaluation-only
    "stress.*",
    # stage lengths and evaluation cadence: extending a run is legitimate (if a learning-rate
    # schedule depends on them, pass resumable_fields without these).
    "cg.steps",
    "cg.ggo_steps",
    "cg.rpn_steps",
    "fpr.steps",
    "fpr.finetune_steps",
    "fpr.seg_pretrain_steps",
    "fpr.eval_every",
    "fpr.early_stop_patience",
    "synth.steps",
)

_ITEMS = ("state", "meta", "config")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")


# ----------------------------------------------------------------------------- paths
def model_dir(workdir: str, stage: str, experiment: str | None = None) -> str:
    """``WORKDIR/checkpoints/<stage>[_<experiment>]``, e.g. ``model_dir(w, "fpr", "baseline-ce")``
    -> ``w/checkpoints/fpr_baseline-ce``; ``model_dir(w, "fpr_augmented", "beta+syn")``."""
    name = stage if not experiment else f"{stage}_{experiment}"
    if not _NAME_RE.match(name) or ".." in name:
        raise CheckpointError(
            f"model name {name!r} (stage={stage!r}, experiment={experiment!r}) must be "
            "letters, digits and _ . + - only"
        )
    return os.path.join(os.path.abspath(workdir), "checkpoints", name)


# ----------------------------------------------------------------------------- config

def config_diff(saved: Any, current: Any, resumable_fields: Iterable[str] = RESUMABLE_FIELDS,
                relevant_fields: Iterable[str] | None = None):
    """:func:`nodulejax.runtime.config_tools.config_diff` ignoring ``RESUMABLE_FIELDS``."""
    return _config_diff(saved, current, resumable_fields, relevant_fields)


def check_config(saved, current, *, directory: str, resumable_fields=RESUMABLE_FIELDS,
                 relevant_fields=None) -> None:
    """Raise CheckpointError naming every differing field that matters (see config_diff)."""
    diffs = config_diff(saved, current, resumable_fields, relevant_fields)
    if diffs:
        lines = "\n".join(f"  {k}: checkpoint={va!r} current={vb!r}" for k, va, vb in diffs)
        raise CheckpointError(
            f"refusing to resume from {directory}: the config differs in "
            f"{len(diffs)} field(s) ({', '.join(k for k, _, _ in diffs)}):\n{lines}\n"
            "Use the checkpoint's config to continue; in the study, --config.rerun=STAGE "
            "redoes the stage that wrote it (and its downstream stages), or use a fresh "
            "--workdir."
        )


# ----------------------------------------------------------------------------- restored
@dataclasses.dataclass
class Restored:
    """A restored checkpoint. ``state`` has the template's structure and shardings."""

    step: int
    state: Any
    key: Any
    data_position: int
    loop_state: dict
    metrics: dict
    config: dict


def _abstract(template):
    """ShapeDtypeStructs (with shardings) for restore; typed keys as their raw data."""

    def leaf(x):
        x = jax.random.key_data(x) if is_typed_key(x) else x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, (np.ndarray, np.generic)):
            return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
        return x

    return jax.tree.map(leaf, template)


class ModelCheckpoints:
    """Orbax managers for one model: ``latest/`` (keep N) and ``best/`` (keep 1).

    Args:
      directory: ``model_dir(...)``.
      config: the run config (ConfigDict or mapping), stored with each checkpoint.
      keep: how many of the latest checkpoints to keep (``c.ckpt.keep``).
      best_metric, best_mode: the validation metric ranking ``best/`` (``"max"``/``"min"``).
      async_save: orbax async writes (arrays are copied off-device before ``save`` returns).
      resumable_fields: config fields allowed to differ on resume.
      relevant_fields: the fields this model depends on (patterns, e.g. ``("seed", "data.*",
        "cg.*")`` for CG); None compares every field. A stage trainer passes its blocks so
        that, say, changing ``fpr.lr`` does not block resuming the CG training.
    """

    def __init__(self, directory: str, *, config: Any = None, keep: int = 3,
                 best_metric: str | None = None, best_mode: str = "max",
                 async_save: bool = True, resumable_fields=RESUMABLE_FIELDS,
                 relevant_fields: Iterable[str] | None = None):
        if keep < 1:
            raise CheckpointError(f"ckpt.keep must be >= 1, got {keep}")
        if best_mode not in ("max", "min"):
            raise CheckpointError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = os.path.abspath(directory)
        self.config = config_to_dict(config)
        self.best_metric, self.best_mode = best_metric, best_mode
        self.resumable_fields = tuple(resumable_fields)
        self.relevant_fields = None if relevant_fields is None else tuple(relevant_fields)
        self._latest = ocp.CheckpointManager(
            os.path.join(self.directory, "latest"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
            item_names=_ITEMS,
        )
        self._best = None
        if best_metric is not None:
            self._best = ocp.CheckpointManager(
                os.path.join(self.directory, "best"),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, create=True, enable_async_checkpointing=async_save,
                    best_fn=lambda m: float(m[best_metric]), best_mode=best_mode,
                    keep_checkpoints_without_metrics=False),
                item_names=_ITEMS,
            )

    # -- queries
    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._latest.all_steps())

    def best_step(self) -> int | None:
        return None if self._best is None else self._best.latest_step()

    # -- save
    def _args(self, step, state, key, data_position, loop_state, metrics):
        meta = {
            "step": int(step),
            "data_position": int(data_position),
            "loop_state": dict(loop_state or {}),
            "metrics": {k: float(v) for k, v in (metrics or {}).items()},
            "key": None if key is None else encode_key(key),
        }
        return ocp.args.Composite(
            state=ocp.args.StandardSave(keys_to_raw(state)),
            meta=ocp.args.JsonSave(meta),
            config=ocp.args.JsonSave(self.config),
        )

    def save(self, step: int, state, *, key=None, data_position: int | None = None,
             loop_state: Mapping | None = None, metrics: Mapping | None = None) -> bool:
        """Save to ``latest/`` (no-op if ``step`` is already saved). Returns whether it saved."""
        if step in self._latest.all_steps():
            return False
        pos = step if data_position is None else data_position
        return self._latest.save(step, args=self._args(step, state, key, pos, loop_state, metrics),
                                 force=True)

    def save_best(self, step: int, state, *, metrics: Mapping, key=None,
                  data_position: int | None = None, loop_state: Mapping | None = None) -> bool:
        """Offer ``state`` to ``best/``; orbax keeps whichever is best by ``best_metric``."""
        if self._best is None:
            raise CheckpointError("save_best needs ModelCheckpoints(best_metric=...)")
        if self.best_metric not in metrics:
            raise CheckpointError(
                f"metrics {sorted(metrics)} lack best_metric {self.best_metric!r}")
        if step in self._best.all_steps():
            return False
        pos = step if data_position is None else data_position
        return self._best.save(step, args=self._args(step, state, key, pos, loop_state, metrics),
                               metrics={k: float(v) for k, v in metrics.items()}, force=True)

    # -- restore
    def restore(self, step: int, template, *, which: str = "latest",
                check: bool = True) -> Restored:
        """Restore ``step`` into ``template``'s structure/dtypes/shardings.

        Raises CheckpointError when the step is missing, unreadable (corrupt, truncated,
        structure mismatch) or its config differs (``check``)."""
        mngr = self._manager(which)
        where = os.path.join(self.directory, which, str(step))
        if step not in mngr.all_steps():
            raise CheckpointError(f"no checkpoint at step {step} in {os.path.dirname(where)}")
        try:
            head = mngr.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
            meta, saved_config = dict(head["meta"]), dict(head["config"] or {})
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
            raise CheckpointError(f"checkpoint {where} is unreadable (corrupt or partial "
                                  f"meta/config): {type(e).__name__}: {e}") from e
        if check:
            check_config(saved_config, self.config, directory=where,
                         resumable_fields=self.resumable_fields,
                         relevant_fields=self.relevant_fields)
        try:
            raw = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(template))))["state"]
            state = raw_to_keys(template, raw)
            jax.block_until_ready(state)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {where} is unreadable (corrupt, partial or of "
                                  f"another model's structure): {type(e).__name__}: {e}") from e
        return Restored(
            step=int(meta["step"]), state=state,
            key=None if meta.get("key") is None else decode_key(meta["key"]),
            data_position=int(meta["data_position"]), loop_state=dict(meta.get("loop_state", {})),
            metrics=dict(meta.get("metrics", {})), config=saved_config)

    def restore_latest(self, template, *, check: bool = True) -> Restored | None:
        """The newest ``latest/`` checkpoint, or None when there is none."""
        step = self.latest_step()
        return None if step is None else self.restore(step, template, check=check)

    def _manager(self, which):
        if which == "latest":
            return self._latest
        if which == "best":
            if self._best is None:
                raise CheckpointError("no best manager: ModelCheckpoints(best_metric=None)")
            return self._best
        raise CheckpointError(f"which must be 'latest' or 'best', got {which!r}")

    def wait(self) -> None:
        """Block until async saves are on disk."""
        self._latest.wait_until_finished()
        if self._best is not None:
            self._best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._latest.close()
        if self._best is not None:
            self._best.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- consumers
def restore_latest(workdir: str, model_name: str, template, config=None, *,
                   resumable_fields=RESUMABLE_FIELDS, relevant_fields=None) -> Restored | None:
    """Restore ``WORKDIR/checkpoints/<model_name>/latest``'s newest step, or None.

    With ``config`` the saved config is checked as in ``ModelCheckpoints.restore``."""
    d = model_dir(workdir, model_name)
    if not os.path.isdir(os.path.join(d, "latest")):
        return None
    with ModelCheckpoints(d, config=config, resumable_fields=resumable_fields,
                          relevant_fields=relevant_fields) as m:
        return m.restore_latest(template, check=config is not None)


def _one_device_template(step_dir: str):
    """Restore target for ``step_dir/state``: the saved shapes and dtypes on the default
    device, whatever mesh wrote it (a model trained data-parallel on 2 host devices loads in
    a 1-device process; orbax refuses a different topology without a target)."""
    with ocp.StandardCheckpointer() as c:
        meta = c.metadata(os.path.join(step_dir, "state"))
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one)
                        if hasattr(m, "shape") and hasattr(m, "dtype") else m, tree)


def load_params(workdir: str, model_name: str, which: str = "best"):
    """The ``params`` of a trained model (for detection, the attack pool, evaluation).

    ``which="best"`` reads ``best/`` and falls back to ``latest/`` when the stage keeps no
    best checkpoint (stages without a validation metric, e.g. CG); ``"latest"`` reads the
    newest ``latest/`` step. Returns the params as a nested dict of arrays (the saved
    structure, restored onto the default device whatever device mesh trained the model, as
    uncommitted arrays). Raises CheckpointError if none exists.
    """
    where, state = _restore_newest(workdir, model_name, which, "state", lambda where: (
        ocp.args.StandardRestore(_one_device_template(where))), "is unreadable")
    if isinstance(state, Mapping) and "params" in state:
        return devices.gather(state["params"])
    if hasattr(state, "params"):
        return devices.gather(state.params)
    top = sorted(state) if isinstance(state, Mapping) else type(state).__name__
    raise CheckpointError(f"checkpoint {where} holds no 'params' entry (top level: {top})")


def _restore_newest(workdir: str, model_name: str, which: str, item: str, args_for, problem):
    """``(step folder, restored item)`` of the newest step of ``best/`` (falling back to
    ``latest/``) or ``latest/``: the checkpoint lookup of :func:`load_params` and
    :func:`saved_config`. ``args_for(step_folder)`` gives the item's Orbax restore args; a
    failed restore is a CheckpointError saying the step folder ``problem``."""
    if which not in ("best", "latest"):
        raise CheckpointError(f"which must be 'best' or 'latest', got {which!r}")
    d = model_dir(workdir, model_name)
    for sub in (("best", "latest") if which == "best" else ("latest",)):
        path = os.path.join(d, sub)
        if not os.path.isdir(path):
            continue
        mngr = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True),
                                     item_names=_ITEMS)
        try:
            step = mngr.latest_step()
            if step is None:
                continue
            where = os.path.join(path, str(step))
            try:
                got = mngr.restore(step, args=ocp.args.Composite(**{item: args_for(where)}))
            except Exception as e:  # noqa: BLE001
                raise CheckpointError(f"checkpoint {where} {problem}: "
                                      f"{type(e).__name__}: {e}") from e
        finally:
            mngr.close()
        return where, got[item]
    raise CheckpointError(f"no {which} checkpoint for model {model_name!r} under {d}"
                          f"{_found(workdir, model_name)}")


def trained_models(workdir: str) -> list[str]:
    """The model names with a folder in ``WORKDIR/checkpoints`` (sorted)."""
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))


def _found(workdir: str, name: str) -> str:
    found = trained_models(workdir)
    if not found:
        return f"; {os.path.join(workdir, 'checkpoints')} holds no models"
    near = nearest(name, found, "nearest: {}; ")
    return f"; {near}models in {os.path.join(workdir, 'checkpoints')}: {', '.join(found)}"


def require_model(workdir: str, name: str) -> str:
    """The checkpoint name of ``name`` (a Table 3 row, e.g. ``baseline-ce``, or a checkpoint
    name, ``fpr_baseline-ce``) if ``WORKDIR/checkpoints/<it>`` exists; otherwise a
    ConfigError (no such row) or CheckpointError naming the models the workdir has."""
    try:
        ckpt = canonical_model_name(name)
    except ConfigError as e:
        raise ConfigError(f"model {name!r}: {e}{_found(workdir, name)}") from None
    if not os.path.isdir(model_dir(workdir, ckpt)):
        raise CheckpointError(f"model {name!r}: no checkpoint {model_dir(workdir, ckpt)}"
                              f"{_found(workdir, ckpt)}")
    return ckpt


def saved_config(workdir: str, model_name: str, which: str = "best") -> dict:
    """The run config stored with a model's checkpoint (the ``config`` item), as a dict:
    ``best/`` (falling back to ``latest/``) or ``latest/``, as :func:`load_params`."""
    _, config = _restore_newest(workdir, model_name, which, "config",
                                lambda where: ocp.args.JsonRestore(), "has no readable config")
    return dict(config or {})


def save_tree(path: str, tree) -> None:
    """A pytree of arrays (a model's params) as one Orbax checkpoint folder ``path`` (which
    must not exist): :func:`load_tree` reads it back, on any device mesh."""
    with ocp.StandardCheckpointer() as c:
        c.save(os.path.abspath(path), jax.tree.map(np.asarray, tree))
        c.wait_until_finished()


def load_tree(path: str):
    """The pytree :func:`save_tree` wrote to ``path``, on the default device (the saved
    shapes and dtypes). CheckpointError when it is missing or unreadable."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint folder")
    try:
        with ocp.StandardCheckpointer() as c:
            meta = c.metadata(path)
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one)
                                  if hasattr(m, "shape") and hasattr(m, "dtype") else m, tree)
            out = c.restore(path, target)
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
        raise CheckpointError(f"{path}: unreadable checkpoint: {type(e).__name__}: {e}") from e
    return devices.gather(out)
