"""FPR trainers: segmentation pretraining, the Table 3 baselines and augmented fine-tunes.

Paper Section 3.1: the false-positive-reduction network is a DenseUNet pre-trained with nodule
segmentation, then trained as a classifier on candidate patches (Adam, lr 1e-3) with 50/50
positive/negative sampling until convergence (early stopping on the validation fold, Section 4).
Section 3.3 / Table 3: the CE baseline is fine-tuned with the Beta loss
(baseline-beta-finetune), which is then fine-tuned with the adversarial augmentations
(``nodulejax.train.augment``).

Stages and checkpoints (one directory per model, ``nodulejax.runtime.checkpoint.model_dir``):

* :func:`train_fpr_seg` -> ``fpr_seg``: soft Dice + BCE on ``seg_patches``.
* :func:`train_fpr_experiment` -> ``fpr_<row>`` for every row of ``nodulejax.experiments``
  (``fpr_baseline-ce``, ``fpr_beta+syn``, ``fpr_beta+syn-random``...), initialised from the
  row's ``init_from`` model (:func:`init_params`: every parameter whose path and shape match is
  copied, the rest - the Beta head replacing the CE head, the classifier on top of the
  segmentation network - keeps its fresh initialisation).
* :func:`evaluate_fpr` -> ``{"auc", "loss"}``; ROC AUC by rank statistics (:func:`roc_auc`).

Beta KL annealing (:func:`kl_anneal_steps_for`): ``kl_weight = min(1, step / T)`` counted from
the start of each stage, only while the Beta head is new: ``T = min(c.fpr.kl_anneal_steps,
stage steps // 2)`` for a row initialised from a model without a Beta head (baseline-beta,
baseline-beta-finetune from baseline-ce), so the weight reaches 1 (the attacks' objective)
by mid-stage; ``T = 0`` (weight 1 throughout) for a row initialised from a Beta model (the
augmented rows continue baseline-beta-finetune's training, whose annealing is over).
Patches get a random cube symmetry (flips and 90-degree rotations) drawn from a
per-example seed of the step (``sampler.aug_seeds``), so runs resume exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from nodulejax.data.patches import random_flip_rot
from nodulejax.data.patchsets import fpr_patches, seg_patches
from nodulejax.data.patchstore import patch_sets_dir
from nodulejax.errors import CheckpointError, ConfigError
from nodulejax.experiments import (
    EXPERIMENTS,
    SEG_MODEL,
    model_name,
    replica_name,
    replica_seed,
    row_config,
    split_replica,
)
from nodulejax.experiments import row as experiment_row
from nodulejax.losses import fpr as losses
from nodulejax.losses.segmentation import seg_loss
from nodulejax.models.build import fpr_model
from nodulejax.models.classifier import load_generator
from nodulejax.models.heads import fpr_prob
from nodulejax.runtime import checkpoint as ckpt
from nodulejax.runtime import devices
from nodulejax.runtime.batching import pad_rows
from nodulejax.runtime.keys import STREAMS
from nodulejax.train import augment as aug
from nodulejax.train.loop import fit
from nodulejax.train.sampler import BalancedSampler, IndexSampler

# --------------------------------------------------------------------------- models, names


# --------------------------------------------------------------------------- metrics
def roc_auc(scores, labels) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative) + 0.5 P(tie),
    from the Mann-Whitney U statistic with average ranks for ties. NaN if a class is empty."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), np.float64)
    # average 1-based rank over each run of equal scores
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@functools.lru_cache(maxsize=16)
def _eval_fn(model, head: str):
    def f(params, x, y):
        out = model.apply({"params": params}, x[..., None], task="cls")
        return fpr_prob(out, head=head), losses.fpr_loss(out, y, head=head, kl_weight=1.0)

    return jax.jit(f)


def fpr_scores(params, config, x, *, head: str | None = None, batch_size: int | None = None):
    """(probabilities (N,), per-example loss inputs) of patches ``x (N, P, P, P)``."""
    probs, _ = _scores_losses(params, config, x, np.zeros(len(x), np.int32), head, batch_size)
    return probs


def _scores_losses(params, config, x, y, head, batch_size):
    head = head or config.fpr.head
    model = fpr_model(config, head)
    fn = _eval_fn(model, head)
    bs = int(batch_size or 2 * config.fpr.batch_size)
    mesh = devices.mesh_for(bs)  # score each batch split over the host's devices
    if mesh is not None:
        params = devices.replicate(params, mesh)
    probs, ls = [], []
    for i in range(0, len(x), bs):
        (xb, yb), n = pad_rows((np.asarray(x[i:i + bs], np.float32),
                                np.asarray(y[i:i + bs], np.float32)), bs)  # one compilation
        if mesh is not None:
            xb, yb = devices.put_batch((xb, yb), mesh)
        p, loss = jax.device_get(fn(params, xb, yb))
        probs.append(p[:n])
        ls.append(loss[:n])
    if not probs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(probs), np.concatenate(ls)


def evaluate_fpr(params, config, scans_or_patches, *, head: str | None = None,
                 workdir: str | None = None) -> dict:
    """ROC AUC and mean loss (KL weight 1) of ``params`` on candidate patches.

    ``scans_or_patches``: a list of PreparedScans (patches cut with ``fpr_patches``, kept on
    disk under ``WORKDIR/patches`` when ``workdir`` is given, in memory otherwise) or a dict
    with ``x (N, P, P, P)`` (an array or a lazy ``nodulejax.data.records`` array) and
    ``y (N,)``. Returns ``{"auc", "loss", "n_pos", "n_neg"}``.
    """
    data = scans_or_patches
    if not isinstance(data, dict):
        data = fpr_patches(list(data), int(config.fpr.patch_size),
                           root=patch_sets_dir(workdir) if workdir else None)
    x, y = data["x"], np.asarray(data["y"])
    probs, ls = _scores_losses(params, config, x, y, head, None)
    return {"auc": roc_auc(probs, y), "loss": float(np.mean(ls)) if len(ls) else float("nan"),
            "n_pos": int((y == 1).sum()), "n_neg": int((y == 0).sum())}


# --------------------------------------------------------------------------- initialisation
def transfer_params(fresh, source) -> tuple[dict, list[str], list[str]]:
    """Copy every leaf of ``source`` whose path and shape match a leaf of ``fresh``.

    Returns ``(params, copied_paths, kept_fresh_paths)`` (paths '/'-joined)."""
    dst = traverse_util.flatten_dict(jax.device_get(fresh), sep="/")
    src = traverse_util.flatten_dict(jax.device_get(source), sep="/")
    copied, kept = [], []
    for k, v in dst.items():
        if k in src and np.shape(src[k]) == np.shape(v):
            dst[k] = np.asarray(src[k], np.asarray(v).dtype)
            copied.append(k)
        else:
            kept.append(k)
    return traverse_util.unflatten_dict(dst, sep="/"), copied, kept


def _load(workdir: str, name: str, needed_by: str):
    try:
        return ckpt.load_params(workdir, name, "best")
    except CheckpointError as e:
        raise CheckpointError(f"{needed_by} initialises from model {name!r}, which has no "
                              f"checkpoint under {workdir}: train it first ({e})") from e


def init_model(model, seed: int, patch_size: int, task: str = "cls") -> dict:
    """Fresh ``params`` of a DenseUNet3D (jitted init with an ``rbg`` key from ``seed``: XLA
    compiles RngBitGenerator far faster than threefry's initialiser graph on CPU)."""
    p = int(patch_size)
    init = _jitted_init(model, task)
    return jax.device_get(init(jax.random.key(int(seed), impl="rbg"),
                               jnp.zeros((1, p, p, p, 1), jnp.float32))["params"])


@functools.lru_cache(maxsize=16)
def _jitted_init(model, task):
    return jax.jit(functools.partial(model.init, task=task))


def init_params(config, workdir: str, row: str, seed: int) -> tuple[dict, dict]:
    """Initial classifier params of Table 3 row ``row``: fresh DenseUNet3D(head) params with
    every matching tensor copied from the row's ``init_from`` model (``fpr_seg`` or a row).
    Returns ``(params, info)``, info = {"init_from", "copied", "fresh"} (path lists)."""
    name, r = experiment_row(row)
    p = int(config.fpr.patch_size)
    model = fpr_model(config, r["head"])
    fresh = init_model(model, seed, p, task="cls")
    src_name = SEG_MODEL if r["init_from"] == "fpr_seg" else model_name(r["init_from"])
    src = _load(workdir, src_name, model_name(name))
    params, copied, kept = transfer_params(fresh, src)
    if not copied:
        raise CheckpointError(f"model {src_name!r} shares no parameter with {model_name(name)!r}"
                              " (different config.fpr widths?)")
    return params, {"init_from": src_name, "copied": copied, "fresh": kept}


# --------------------------------------------------------------------------- segmentation

def _tx(lr: float):
    return optax.adam(float(lr))


def _progress(config, progress):
    return bool(config.train.get("progress", True)) if progress is None else bool(progress)


def train_fpr_seg(config, workdir: str, train_scans, *, progress: bool | None = None,
                  patches: dict | None = None) -> dict:
    """Pretrain DenseUNet3D on nodule segmentation (Section 3.1) -> params ("fpr_seg").

    ``patches``: a precomputed ``seg_patches`` dict (``x``, ``mask``) instead of cutting
    them from ``train_scans`` (once, into ``WORKDIR/patches``, read back by row).
    ``c.fpr.seg_pretrain_steps`` steps of Adam ``c.fpr.lr``."""
    f = config.fpr
    p, bs = int(f.patch_size), int(f.batch_size)
    data = patches if patches is not None else seg_patches(
        list(train_scans), p, seed=int(config.seed), root=patch_sets_dir(workdir))
    if len(data["x"]) == 0:
        raise ConfigError("train_fpr_seg: the training scans have no nodule patches")
    model = fpr_model(config)
    tx = _tx(f.lr)
    key = jax.random.key(int(config.seed))
    params = init_model(model, int(config.seed), p, task="seg")
    state = {"params": params, "opt_state": tx.init(params)}
    sampler = IndexSampler(len(data["x"]), bs, int(config.seed))

    def batch_fn(step):
        b = sampler.batch(step).take(jax.process_index(), jax.process_count())  # this host's
        xs, ms = [], []
        for i, s in zip(b.index, b.seed, strict=False):
            x, m = data["x"][i], data["mask"][i]
            if f.augment:
                x, m = random_flip_rot(x, int(s), m)
            xs.append(x)
            ms.append(m)
        return {"x": np.stack(xs).astype(np.float32), "mask": np.stack(ms).astype(np.float32)}

    def train_step(state, batch, key):
        def loss_fn(params):
            logits = model.apply({"params": params}, batch["x"][..., None], task="seg")
            return seg_loss(logits, batch["mask"][..., None])

        loss, g = jax.value_and_grad(loss_fn)(state["params"])
        upd, opt = tx.update(g, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], upd), "opt_state": opt}, {
            "loss": loss}

    res = fit(train_step, state, batch_fn, num_steps=int(f.seg_pretrain_steps), workdir=workdir,
              model_name=SEG_MODEL, config=config, key=key,
              progress=_progress(config, progress))
    return jax.device_get(res.state["params"])


# --------------------------------------------------------------------------- classifier stages
def kl_anneal_steps_for(config, row: dict, stage: str) -> int:
    """Steps T of the KL ramp of a Table 3 row's stage (module docstring)."""
    init = str(row.get("init_from", ""))
    if init in EXPERIMENTS and EXPERIMENTS[init]["head"] == "beta":
        return 0
    return min(int(config.fpr.kl_anneal_steps), max(_steps_for(config, stage) // 2, 1))


def _steps_for(config, stage: str) -> int:
    if stage == "fpr":
        return int(config.fpr.steps)
    return int(config.fpr.finetune_steps)  # fpr_finetune and fpr_augmented


@functools.lru_cache(maxsize=16)
def _plain_step(model, lr: float, head: str, kl_anneal_steps: int):
    """(tx, train_step) without in-loop augmentation, shared by stages with the same settings
    (one function object -> ``fit`` compiles it once per process)."""
    tx = _tx(lr)
    return tx, make_fpr_step(model, tx, head=head, kl_anneal_steps=kl_anneal_steps)


def make_fpr_step(model, tx, *, head: str, kl_anneal_steps: int, inloop=None):
    """``train_step(state, batch, key)`` of the FPR classifier.

    state: {"params", "opt_state", "step"} (+ "target" frozen attack params, "gen" generator
    variables for in-loop augmentation). batch: x (B, P, P, P), y (B,), kind (B,) int32.
    ``inloop``: ``augment.make_inloop_augment(...)`` or None.
    """

    def train_step(state, batch, key):
        x = batch["x"].astype(jnp.float32)[..., None]
        y = batch["y"].astype(jnp.float32)
        kl = losses.kl_anneal(state["step"], kl_anneal_steps)
        if inloop is not None:
            tv = {"params": state["target"] if "target" in state else state["params"]}
            gv = state.get("gen")
            k_in = jax.random.fold_in(key, STREAMS["train/inloop"])
            x, attacked = inloop(x, batch["kind"], k_in, tv, gv, kl)

        def loss_fn(params):
            out = model.apply({"params": params}, x, task="cls")
            prob = fpr_prob(out, head=head)
            return jnp.mean(losses.fpr_loss(out, y, head=head, kl_weight=kl)), prob

        (loss, prob), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        upd, opt = tx.update(g, state["opt_state"], state["params"])
        new = dict(state, params=optax.apply_updates(state["params"], upd), opt_state=opt,
                   step=state["step"] + 1)
        acc = jnp.mean((prob > 0.5) == (y > 0.5))
        metrics = {"loss": loss, "acc": acc, "kl_weight": kl}
        if inloop is not None:
            metrics.update(inloop_metrics(attacked))
        return new, metrics

    return train_step


def inloop_metrics(attacked: dict) -> dict:
    """Mean attacked-model score before / after each in-step attack of a batch
    (``inloop/<kind>_before``, ``inloop/<kind>_after``; valid examples only), so the training
    log shows whether the in-loop attacks worked."""
    out = {}
    for name, r in attacked.items():
        w = r["valid"].astype(jnp.float32)
        n = jnp.maximum(jnp.sum(w), 1.0)
        out[f"inloop/{name}_before"] = jnp.sum(r["prob_before"] * w) / n
        out[f"inloop/{name}_after"] = jnp.sum(r["prob_after"] * w) / n
    return out


def train_patch_set(config, train_scans, workdir: str | None = None) -> dict:
    """The real training patches of an FPR classifier stage: ``fpr_patches`` of the training
    scans at ``c.fpr.patch_size`` plus a ``c.fpr.jitter_vox`` margin per side when
    ``c.fpr.augment`` (cropped back to the patch size at a random offset in the batch).
    With ``workdir`` the set is written once under ``WORKDIR/patches`` and its ``x`` read from
    disk by row (same values); without, it is held in memory."""
    f = config.fpr
    jitter = int(f.get("jitter_vox", 0)) if bool(f.augment) else 0
    return fpr_patches(list(train_scans), int(f.patch_size) + 2 * jitter, seed=int(config.seed),
                       root=patch_sets_dir(workdir) if workdir else None)


class FineTuneData(NamedTuple):
    """What an FPR classifier stage trains on: the five groups' sources, their sampler, the
    in-step kinds' static counts and ``batch(step) -> {"x", "y", "kind"}`` (this host's share
    of the global batch ``step``, :func:`augment.gather_batch`)."""

    sources: list
    sampler: BalancedSampler
    counts: dict
    batch: Callable[[int], dict]


def fine_tune_data(config, name: str, real: dict, *, train_scans=None,
                   pool_dir: str | None = None, workdir: str | None = None) -> FineTuneData:
    """The batches of Table 3 row ``name``'s stage, exactly as :func:`train_fpr_experiment`
    feeds them to the loss (the one place that builds them; probes and tests use it too).

    ``config``: the run config (the row is applied here); ``real``: the real training patches
    (:func:`train_patch_set`); ``train_scans``: for in-loop synthesis backgrounds;
    ``pool_dir``: the augmentation pool (pool mode); ``workdir``: the run folder, whose
    ``patches`` hold in-loop synthesis's backgrounds on disk (None: in memory). Baseline
    stages get real patches only."""
    name, row = experiment_row(name)
    cfg = row_config(config, name)
    f = cfg.fpr
    p, bs, seed = int(f.patch_size), int(f.batch_size), int(cfg.seed)
    aug_row = row if row["stage"] == "fpr_augmented" else dict(row, syn="none", perturb=False,
                                                               poisson=False)
    sources = aug.build_sources(cfg, aug_row, real, scans=train_scans, pool_dir=pool_dir,
                                patch_root=patch_sets_dir(workdir) if workdir else None,
                                seed=seed)
    sampler = BalancedSampler([s.size for s in sources], aug.group_ratios(cfg, aug_row), bs,
                              seed)

    def batch(step: int) -> dict:
        idx = sampler.batch(step).take(jax.process_index(), jax.process_count())  # this host's
        return aug.gather_batch(sources, idx, augment=bool(f.augment), patch_size=p)

    return FineTuneData(sources, sampler, aug.max_counts(sampler, sources), batch)


def train_fpr_experiment(config, workdir: str, name: str, train_scans, val_scans, *,
                         pool_dir: str | None = None, generator=None,
                         progress: bool | None = None,
                         train_patches: dict | None = None, val_patches: dict | None = None):
    """Train the FPR model of Table 3 row ``name`` (configs/experiments.py) -> best params.

    ``name`` may be an augmented row's seed replica (``"beta+perturb.s1"``,
    :func:`nodulejax.experiments.split_replica`): the same fine-tune trained with the seed
    ``replica_seed(c.seed, k)``, saved as ``fpr_beta+perturb.s1``.

    stage "fpr": init from ``fpr_seg``, ``c.fpr.steps``; "fpr_finetune": from baseline-ce,
    Beta head fresh, ``c.fpr.finetune_steps``; "fpr_augmented": from baseline-beta-finetune,
    ``c.fpr.finetune_steps``, groups and ratios of ``augment.build_sources`` from the pool
    (``pool_dir``, default ``WORKDIR/pool``) or generated in the step (``c.train.aug_source``).
    ``generator``: the synthesizer (``GenHandle``) for in-loop synthesis (default:
    ``load_generator`` of the ``synth`` checkpoint, with ``c.synth.sampling``). Early stopping
    on validation AUC (``c.fpr.eval_every``, ``c.fpr.early_stop_patience``); returns the
    params of the best validation AUC.
    ``train_patches`` / ``val_patches``: precomputed ``fpr_patches`` dicts (skip cutting);
    otherwise both sets are cut once into ``WORKDIR/patches`` and read from disk by row.
    """
    base, k = split_replica(name)
    name, row = experiment_row(base)
    cfg = row_config(config, name)
    mname = model_name(replica_name(name, k))  # k = 0: the row itself
    cfg.seed = replica_seed(cfg.seed, k)
    f, head, stage = cfg.fpr, row["head"], row["stage"]
    seed = int(cfg.seed)
    real = train_patches if train_patches is not None else train_patch_set(cfg, train_scans,
                                                                           workdir)
    val = val_patches if val_patches is not None else fpr_patches(
        list(val_scans), int(f.patch_size), root=patch_sets_dir(workdir))
    key = jax.random.key(seed)
    params, _ = init_params(cfg, workdir, name, seed + 1)
    data = fine_tune_data(cfg, name, real, train_scans=train_scans,
                          pool_dir=pool_dir or f"{workdir}/pool", workdir=workdir)
    counts = data.counts
    model = fpr_model(cfg, head)
    kl_steps = kl_anneal_steps_for(cfg, row, stage)
    tx, train_step = _plain_step(model, float(f.lr), head, kl_steps)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    inloop = None
    if counts:
        adversarial = any(k in counts for k in (aug.SYN_PGD, aug.PERTURB, aug.NOISE))
        needs_gen = any(k in counts for k in (aug.SYN_RANDOM, aug.SYN_PGD))
        target = cfg.train.inloop_target
        if target not in ("frozen", "current"):
            raise ConfigError(f"config.train.inloop_target={target!r}: expected 'frozen' or "
                              "'current'")
        gen_module = None
        if needs_gen:
            if generator is None:
                try:
                    generator = load_generator(cfg, workdir)
                except CheckpointError as e:
                    raise CheckpointError(f"{mname} synthesizes nodules in the step with the "
                                          f"'synth' model, which is not usable under {workdir}: "
                                          f"train it first ({e})") from e
            gen_module = generator.model
            state["gen"] = jax.device_get(generator.variables)
        if adversarial and target == "frozen":
            state["target"] = jax.tree.map(np.array, jax.device_get(params))
        inloop = aug.make_inloop_augment(cfg, model, head=head, counts=counts,
                                         generator=gen_module)
        train_step = make_fpr_step(model, tx, head=head,
                                   kl_anneal_steps=kl_steps, inloop=inloop)

    def eval_fn(state, step):
        return evaluate_fpr(state["params"], cfg, val, head=head)

    fit(train_step, state, data.batch, num_steps=_steps_for(cfg, stage), workdir=workdir,
        model_name=mname, config=cfg, key=key, eval_fn=eval_fn, eval_every=int(f.eval_every),
        best_metric="auc", best_mode="max", patience=int(f.early_stop_patience),
        progress=_progress(cfg, progress))
    return ckpt.load_params(workdir, mname, "best")


__all__ = ["roc_auc", "evaluate_fpr", "fpr_scores",
           "transfer_params", "init_params", "train_fpr_seg", "make_fpr_step",
           "kl_anneal_steps_for", "inloop_metrics", "train_patch_set", "FineTuneData",
           "fine_tune_data", "train_fpr_experiment"]
