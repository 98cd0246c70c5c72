"""Candidate-generator training (paper Section 3.1): three ResUNet stages run with ``fit``.

1. ``cg``: ResUNet3D on same-size Gaussian blob heatmaps of all nodules ("3D Blob All
   Nodules"); penalty-reduced focal loss (``nodulejax.losses.detection``), Adam, ``c.cg.lr``,
   ``c.cg.steps`` steps.
2. ``cg_ggo``: the same network, initialised from (1), fine-tuned on crops around
   ground-glass and part-solid nodules (``c.cg.ggo_types``) for ``c.cg.ggo_steps`` ("3D Blob
   Ground Glass Nodules"), every crop centred on one (``c.cg.ggo_pos_fraction`` = 1: the
   paper fine-tunes "with only the ground glass candidates and part-solid candidates"; the
   crop around each still holds lung background). A dataset without nodule types (LUNA16)
   or without such nodules in the training folds falls back to all nodules, and says so in
   the log.
3. ``rpn``: ``ResUNetRPN`` with its backbone initialised from (1), fine-tuned (backbone and
   head) with the Faster R-CNN RPN loss for ``c.cg.rpn_steps`` ("3D RPN Head").

Each stage checkpoints under ``WORKDIR/checkpoints/<cg|cg_ggo|rpn>``; a killed run resumes
exactly, and a finished stage is skipped (``fit`` restores its last checkpoint and returns).
Batch ``i`` of a stage is a pure function of ``(c.seed, stage, i)``
(``np.random.default_rng([seed, stage, i])``), so resume replays the same crops.
Training crops come from ``nodulejax.data.patchsets.cg_crop_batch``: ``image (B, S, S, S)``,
``boxes (B, M, 4)`` (z, y, x, d in crop voxels), ``valid (B, M)``; the blob target is built
on the device from the boxes (``heatmap_target`` under ``vmap``).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nodulejax.data.patchsets import cg_crop_batch
from nodulejax.errors import ConfigError
from nodulejax.losses import detection as dl
from nodulejax.models.build import cg_model, rpn_model
from nodulejax.models.resunet import ResUNet3D
from nodulejax.models.rpn import ResUNetRPN, anchors_for
from nodulejax.runtime.sharding import process_share
from nodulejax.train.loop import fit

log = logging.getLogger(__name__)

STAGES = ("cg", "cg_ggo", "rpn")
_STAGE_TAG = {"cg": 0, "cg_ggo": 1, "rpn": 2}


def blob_sigma_vox(config) -> float:
    """Blob std in voxels at the working spacing: c.cg.blob_sigma_mm / c.data.spacing."""
    return float(config.cg.blob_sigma_mm) / float(config.data.spacing)


# ----------------------------------------------------------------------------- steps
def heatmap_targets(boxes, valid, shape, sigma_vox):
    """(B, M, 4) boxes + (B, M) valid -> (B, D, H, W, 1) blob targets (on device)."""
    fn = lambda b, v: dl.heatmap_target(shape, b[:, :3], sigma_vox, v)  # noqa: E731
    return jax.vmap(fn)(boxes, valid)[..., None]


def _adam_step(loss_fn, tx, public_loss_fn):
    """``step(state {params, opt_state}, batch, key) -> (state, {"loss"})``: one Adam step on
    ``loss_fn(params, batch, key)``; ``step.loss_fn`` / ``step.tx`` for tests and tools."""

    def step(state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates),
                "opt_state": opt_state}, {"loss": loss}

    step.loss_fn = public_loss_fn
    step.tx = tx
    return step


@functools.lru_cache(maxsize=16)
def heatmap_step(model: ResUNet3D, lr: float, sigma_vox: float, loss: str = "focal",
                 pos_weight: float = 50.0):
    """Train step of the blob stages: focal loss on the device-built blob heatmap.

    ``(state {params, opt_state}, batch {image (B,S,S,S,1), boxes, valid}, key) ->
    (state, {"loss"})``. ``loss``: "focal" or "blob_bce" (``detection_losses.heatmap_loss``).
    Cached per arguments so ``fit`` jits it once.
    """
    tx = optax.adam(lr)

    def loss_fn(params, batch):
        x = batch["image"]
        target = heatmap_targets(batch["boxes"], batch["valid"], x.shape[1:4], sigma_vox)
        logits, _ = model.apply({"params": params}, x)
        return jnp.mean(dl.heatmap_loss(logits, target, loss, pos_weight))

    return _adam_step(lambda params, batch, key: loss_fn(params, batch), tx, loss_fn)


@functools.lru_cache(maxsize=16)
def rpn_step(model: ResUNetRPN, lr: float, input_size: int, anchors_mm: tuple, spacing: float,
             pos_iou: float = 0.5, neg_iou: float = 0.2, num_samples: int = 256,
             pos_fraction: float = 0.5):
    """Train step of the RPN stage: ``rpn_targets`` (IoU matching at ``pos_iou`` /
    ``neg_iou``, ``c.cg.rpn_pos_iou`` / ``rpn_neg_iou``) + ``rpn_loss`` on about
    ``num_samples`` sampled anchors, at most ``pos_fraction`` positive (``c.cg.rpn_num_samples``
    / ``rpn_pos_fraction``; Faster R-CNN's 256 / 0.5)."""
    tx = optax.adam(lr)
    anchors = anchors_for(model, (input_size,) * 3, anchors_mm, spacing)

    def loss_fn(params, batch, key):
        out = model.apply({"params": params}, batch["image"])
        labels, tdeltas = dl.rpn_targets(anchors, batch["boxes"], batch["valid"], pos_iou,
                                         neg_iou)
        return jnp.mean(dl.rpn_loss(out["objectness"], out["deltas"], labels, tdeltas, key,
                                    num_samples, pos_fraction))

    return _adam_step(loss_fn, tx, loss_fn)


# ----------------------------------------------------------------------------- data
def ggo_subset_types(config, scans) -> tuple[str, ...] | None:
    """Types for the GGO fine-tune, or None (all nodules) when the training scans hold none
    of ``c.cg.ggo_types`` (LUNA16 has no types) -- logged, since it changes the stage."""
    want = tuple(config.cg.ggo_types)
    n = sum(int(np.isin(np.asarray(s.nodule_types, object), want).sum()) for s in scans
            if len(s.nodule_types))
    if n == 0:
        log.warning("cg_ggo: no %s nodules in the %d training scans (no nodule types in this "
                    "dataset?); fine-tuning on all nodules instead", want, len(scans))
        return None
    log.info("cg_ggo: fine-tuning on %d %s nodules", n, want)
    return want


def make_batch_fn(config, scans, stage: str, types=None):
    """``step -> {image (B,S,S,S,1) float32, boxes (B,M,4), valid (B,M)}``, pure in step."""
    if not scans:
        raise ConfigError("train_cg: no training scans")
    size, bsz, seed = int(config.cg.input_size), int(config.cg.batch_size), int(config.seed)
    tag = _STAGE_TAG[stage]

    # the GGO fine-tune sees "only the ground glass candidates and part-solid candidates"
    # (Section 3.1): its crops are centred on those nodules (c.cg.ggo_pos_fraction, paper 1.0)
    pos_frac = float(config.cg.get("ggo_pos_fraction", 1.0)) if stage == "cg_ggo" and types \
        else 0.5

    def batch_fn(step):
        rng = np.random.default_rng([seed, tag, int(step)])
        b = cg_crop_batch(scans, size, bsz, rng, pos_frac=pos_frac, types=types)
        s = process_share(bsz)  # this host's rows of the global batch
        return {"image": b["image"][s, ..., None].astype(np.float32), "boxes": b["boxes"][s],
                "valid": b["valid"][s]}

    return batch_fn


# ----------------------------------------------------------------------------- stages
def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _fit_stage(step, params, batch_fn, num_steps, workdir, name, config, key, eval_fn,
               progress, **kw):
    state = {"params": jax.tree.map(jnp.array, params), "opt_state": step.tx.init(params)}
    res = fit(step, state, batch_fn, num_steps=int(num_steps), workdir=workdir, model_name=name,
              config=config, key=key, eval_fn=eval_fn, progress=progress, **kw)
    if res.resumed_from is not None and res.resumed_from >= num_steps:
        log.info("%s: finished (step %d), skipped", name, res.resumed_from)
    return _host(res.state["params"]), res


def train_cg(config, workdir: str, scans_train, scans_val=None, *, progress: bool = True,
             **fit_kwargs) -> dict:
    """Train the three CG networks of Section 3.1 (resumable; finished stages are skipped).

    Args:
      config: full run config (``c.cg``, ``c.data.spacing``, ``c.seed``, ``c.runtime``).
      workdir: run directory; checkpoints in ``WORKDIR/checkpoints/{cg,cg_ggo,rpn}``.
      scans_train: list of ``PreparedScan`` (training folds).
      scans_val: optional validation scans; when given, each stage logs ``val/loss`` on a
        fixed set of validation crops after its last step.
      fit_kwargs: passed to ``fit`` (e.g. ``async_save=False``, ``on_step``).
    Returns:
      {"cg": params, "cg_ggo": params, "rpn": params} (host numpy pytrees), plus
      "results": {stage: FitResult}.
    """
    g = config.cg
    key = jax.random.key(int(config.seed))
    size = int(g.input_size)
    sigma = blob_sigma_vox(config)
    model = cg_model(config)
    hstep = heatmap_step(model, float(g.lr), sigma, str(g.get("loss", "focal")),
                         float(g.get("blob_pos_weight", 50.0)))
    x0 = jnp.zeros((1, size, size, size, 1), jnp.float32)
    out, results = {}, {}

    def val_fn(step_obj, stage, with_key=False, types=None):
        if not scans_val:
            return None
        vb = make_batch_fn(config, scans_val, stage, types)(10**6)
        lf = jax.jit(step_obj.loss_fn)
        if with_key:
            return lambda st, _s: {"loss": float(lf(st["params"], vb, jax.random.key(0)))}
        return lambda st, _s: {"loss": float(lf(st["params"], vb))}

    # (a) all-nodule blob network
    init = jax.jit(model.init)(jax.random.fold_in(key, 0), x0)["params"]
    out["cg"], results["cg"] = _fit_stage(
        hstep, init, make_batch_fn(config, scans_train, "cg"), g.steps, workdir, "cg", config,
        jax.random.fold_in(key, 1), val_fn(hstep, "cg"), progress, **fit_kwargs)

    # (b) GGO fine-tune from (a)
    types = ggo_subset_types(config, scans_train)
    out["cg_ggo"], results["cg_ggo"] = _fit_stage(
        hstep, out["cg"], make_batch_fn(config, scans_train, "cg_ggo", types), g.ggo_steps,
        workdir, "cg_ggo", config, jax.random.fold_in(key, 2),
        val_fn(hstep, "cg_ggo", types=types), progress, **fit_kwargs)

    # (c) RPN: backbone from (a), new head
    rmodel = rpn_model(config)
    rstep = rpn_step(rmodel, float(g.lr), size, tuple(float(a) for a in g.anchors_mm),
                     float(config.data.spacing), float(g.rpn_pos_iou), float(g.rpn_neg_iou),
                     int(g.rpn_num_samples), float(g.rpn_pos_fraction))
    rinit = _host(jax.jit(rmodel.init)(jax.random.fold_in(key, 3), x0)["params"])
    rinit = dict(rinit, backbone=out["cg"])
    out["rpn"], results["rpn"] = _fit_stage(
        rstep, rinit, make_batch_fn(config, scans_train, "rpn"), g.rpn_steps, workdir, "rpn",
        config, jax.random.fold_in(key, 4), val_fn(rstep, "rpn", with_key=True), progress,
        **fit_kwargs)
    out["results"] = results
    return out
