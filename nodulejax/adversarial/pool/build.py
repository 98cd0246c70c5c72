"""The precomputed adversarial augmentation pool (paper Section 4; written by ``attack.py pool``).

"All the augmentation patches ... were pre-computed and randomly sampled during the FPR model
training by attacking the baseline network (baseline-beta-finetune)". Four kinds, one folder
each, in the layout :class:`~nodulejax.adversarial.pool.store.PoolReader` (and
``nodulejax.train.augment``) reads (files and reader: :mod:`nodulejax.adversarial.pool.store`)::

    POOL/manifest.json                      config fingerprint, plan, finished shards
    POOL/<kind>/shard_00000.npz ...         x (n, P, P, P) float16 in [0, 1] + metadata (n, ...)

* ``syn_random`` / ``syn_pgd``: synthetic nodules (Section 3.2, Eqs. 7-9) fused into
  ``c.pool.background_per_scan`` lung background patches per training scan (inside the lung
  mask, at least nodule radius + half a patch from every finding), ``c.pool.syn_*_per_background``
  per background; ``syn_pgd`` searches the latent code with PGD (``c.pgd.latent_*``: eps 0.15,
  step 0.05, 20 steps). Nodules below ``c.synth.min_diameter_mm`` are filtered out: each item
  tries up to ``c.pool.max_tries`` latent draws for one that passes; a PGD nodule that shrinks
  below the threshold is dropped (its item index is then missing from the shard).
* ``perturb``: ``c.pool.perturb_per_positive`` PGD-perturbed copies of every real positive
  (Eqs. 10-11, Fig. 6 top, ``c.pgd.image_*``).
* ``noise``: ``c.pool.num_noise`` adversarial noise patches (Fig. 6 middle, ``c.pgd.noise_*``).

Determinism: item ``i`` of a kind uses the key ``fold_in(fold_in(PRNGKey(c.seed), KIND_ID), i)``
and its own background / positive, so a sample never depends on the batch it ran in, on the
shard layout or on restarts. Batches have the fixed size ``c.pgd.batch_size`` (a short last batch
is padded with copies of its last item, then cut), so re-running a shard is bitwise identical.

Resume: each shard is written to a hidden temp file, fsynced and renamed; only then is the
manifest rewritten (temp + fsync + rename). A killed run restarted with the same config
recomputes exactly the shards the manifest does not list. A manifest whose fingerprint
(relevant config fields, FPR/generator parameter digests, the training scan uids) differs
from the current run raises :class:`~nodulejax.errors.PoolError`.

Per-sample metadata (arrays of length n in every shard): ``item`` (index within the kind),
``seed`` (c.seed), ``key`` (n, 2) uint32 raw key data, ``attack`` (str), ``eps``, ``steps``,
``prob_before`` / ``prob_after`` (FPR probability of "nodule" before / after the attack;
for ``syn_random`` both are the score of the random nodule), ``prob_stored`` (the attacked
FPR's score of the patch as stored, float16: what a fine-tune's loss sees, since pool patches
reach it untransformed, ``train.augment``; it differs from ``prob_after`` by the float16
rounding only), ``uid`` and ``center_zyx``
(source scan and voxel centre, ``""`` / -1 for noise), ``diameter_mm`` (synthetic nodule's
equivalent-sphere diameter, NaN otherwise) and, for ``syn_pgd``, ``diameter_before_mm`` and
``tries`` (which latent draw passed the diameter filter).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial import attacks
from nodulejax.adversarial.pool.store import (
    MANIFEST,
    POOL_KINDS,
    read_manifest,
    shard_path,
    write_manifest,
    write_shard,
)
from nodulejax.adversarial.synthetic import synthesize_filtered
from nodulejax.data.backgrounds import background_patches, positive_patches
from nodulejax.data.patchstore import patch_sets_dir
from nodulejax.errors import ConfigError, PoolError
from nodulejax.experiments import ATTACK_MODEL
from nodulejax.models.classifier import FPRHandle, GenHandle, load_fpr, load_generator
from nodulejax.runtime.batching import map_batches
from nodulejax.runtime.config_tools import nested_diff, select, tree_digest
from nodulejax.runtime.files import atomic_write_json
from nodulejax.runtime.keys import STREAMS, item_keys

KIND_ID = {k: STREAMS[f"pool/{k}"] for k in POOL_KINDS}  # PRNG stream of each kind
FORMAT_VERSION = 2  # 2: prob_stored

# config fields that decide the pool's content (fnmatch patterns); pgd.batch_size only changes
# how items are grouped, so a resumed run may use another one.
RELEVANT_FIELDS = ("seed", "data.spacing", "data.hu_window", "fpr.patch_size", "fpr.growth",
                   "fpr.block_layers", "fpr.init_features", "fpr.compression", "fpr.cls_hidden",
                   "fpr.norm_groups", "fpr.up_mode", "synth.patch_size", "synth.latent_dim",
                   "synth.width", "synth.mask_threshold", "synth.min_diameter_mm",
                   "pgd.latent_*", "pgd.image_*", "pgd.noise_*", "pool.*")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one kind's items
class _Context(NamedTuple):
    config: Any
    fpr: FPRHandle
    gen: GenHandle | None
    bg: tuple  # (x, uid, center)
    pos: tuple  # (x, uid, center)


def plan(config, n_backgrounds: int, n_positives: int) -> dict[str, int]:
    """Number of work items per kind (before the diameter filter)."""
    o = config.pool
    return {"syn_random": n_backgrounds * int(o.syn_random_per_background),
            "syn_pgd": n_backgrounds * int(o.syn_pgd_per_background),
            "perturb": n_positives * int(o.perturb_per_positive),
            "noise": int(o.num_noise)}


def _compute(kind: str, items: np.ndarray, ctx: _Context) -> dict:
    """All samples of ``items`` (indices within ``kind``) as numpy arrays incl. ``keep``."""
    c, fpr = ctx.config, ctx.fpr
    q = c.pgd
    p = int(c.fpr.patch_size)
    n = len(items)
    keys = item_keys(int(c.seed), KIND_ID[kind], items)
    kl = float(c.pool.get("kl_weight", 1.0))
    meta: dict[str, np.ndarray] = {
        "item": items.astype(np.int64), "seed": np.full(n, int(c.seed), np.int64),
        "uid": np.full(n, "", dtype="<U64"), "center_zyx": np.full((n, 3), -1, np.int64),
        "diameter_mm": np.full(n, np.nan, np.float32)}
    bs = int(q.batch_size)
    if kind in ("syn_random", "syn_pgd"):
        per = int(c.pool.syn_random_per_background if kind == "syn_random"
                  else c.pool.syn_pgd_per_background)
        bi = items // per
        search = kind == "syn_pgd"

        def fn(k, b_idx):
            return synthesize_filtered(k, fpr, ctx.gen, ctx.bg[0][b_idx], c, search=search)

        r = map_batches(fn, (keys, bi), bs)
        sel = "pgd" if search else "random"
        x, keep = r[f"x_{sel}"], r[f"ok_{sel}"] & r["ok_random"]
        meta.update(uid=ctx.bg[1][bi].astype("<U64"), center_zyx=ctx.bg[2][bi],
                    diameter_mm=r[f"diam_{sel}"].astype(np.float32), key=r["key"],
                    prob_before=r["prob_random"], prob_after=r[f"prob_{sel}"],
                    tries=r["tries"])
        if search:
            meta.update(diameter_before_mm=r["diam_random"].astype(np.float32),
                        eps=np.full(n, float(q.latent_eps), np.float32),
                        steps=np.full(n, int(q.latent_steps), np.int32),
                        attack=np.full(n, "latent_pgd", "<U16"))
        else:
            meta.update(eps=np.zeros(n, np.float32), steps=np.zeros(n, np.int32),
                        attack=np.full(n, "random_code", "<U16"))
        return {"x": x, "keep": keep, **meta}
    if kind == "perturb":
        pi = items // int(c.pool.perturb_per_positive)

        def fn(k, idx):
            r = attacks.perturb_positives(
                jnp.asarray(k), fpr.model, fpr.variables, jnp.asarray(ctx.pos[0][idx])[..., None],
                head=fpr.head, kl_weight=kl, eps=float(q.image_eps),
                step_size=float(q.image_step), steps=int(q.image_steps), norm=str(q.image_norm))
            return {"x": np.asarray(r.x_adv)[..., 0], "pb": r.prob_before, "pa": r.prob_after}

        r = map_batches(fn, (keys, pi), bs)
        meta.update(uid=ctx.pos[1][pi].astype("<U64"), center_zyx=ctx.pos[2][pi],
                    eps=np.full(n, float(q.image_eps), np.float32))
    elif kind == "noise":
        def fn(k):
            r = attacks.adversarial_noise(
                jnp.asarray(k), fpr.model, fpr.variables, len(k), p, head=fpr.head,
                kl_weight=kl, eps=float(q.noise_eps), step_size=float(q.noise_step),
                steps=int(q.noise_steps), norm=str(q.image_norm))
            return {"x": np.asarray(r.x_adv)[..., 0], "pb": r.prob_before, "pa": r.prob_after}

        r = map_batches(fn, (keys,), bs)
        meta.update(eps=np.full(n, float(q.noise_eps), np.float32))
    else:
        raise PoolError(f"unknown pool kind {kind!r}; expected one of {POOL_KINDS}")
    meta.update(key=keys, prob_before=r["pb"], prob_after=r["pa"],
                steps=np.full(n, int(q.noise_steps if kind == "noise" else q.image_steps),
                              np.int32),
                attack=np.full(n, "image_pgd_pos" if kind == "perturb" else "noise_pgd", "<U16"))
    return {"x": r["x"], "keep": np.ones(n, bool), **meta}


def fingerprint(config, fpr: FPRHandle, gen: GenHandle | None, train_uids) -> dict:
    """What decides the pool's content: relevant config fields, weights, training scans."""
    fields = select(config, RELEVANT_FIELDS, exclude=("pgd.batch_size",))
    return {"format": FORMAT_VERSION, "config": fields, "fpr_model": fpr.name,
            "fpr_head": fpr.head, "fpr_params": tree_digest(fpr.variables),
            "generator_params": None if gen is None else tree_digest(gen.variables),
            "train_uids": hashlib.sha256("\n".join(sorted(train_uids)).encode()).hexdigest()[:16],
            "num_train_scans": len(train_uids)}



# --------------------------------------------------------------------------- the pool
def build_pool(config, workdir: str, train_scans, *,
               fpr_model_name: str = ATTACK_MODEL, out_dir: str | None = None,
               fpr: FPRHandle | None = None, generator: GenHandle | None = None,
               kinds=POOL_KINDS, progress: bool = True,
               on_shard: Callable[[str, int], None] | None = None) -> str:
    """Precompute (or finish) the augmentation pool; returns its folder.

    Args:
      config: run config (``c.pool``, ``c.pgd``, ``c.synth``, ``c.fpr``, ``c.seed``).
      workdir: run folder holding ``checkpoints/<fpr_model_name>`` and ``checkpoints/synth``.
      train_scans: ``PreparedScan`` list (backgrounds and positives come from them).
      fpr_model_name: attacked FPR checkpoint (paper: baseline-beta-finetune).
      out_dir: pool folder (default ``WORKDIR/pool``).
      fpr, generator: already loaded models (skip loading from ``workdir``).
      kinds: which kinds to build (default all four).
      progress: tqdm bar over samples (throughput in samples/s).
      on_shard: ``on_shard(kind, shard_index)`` after each shard is committed.
    Raises PoolError if ``out_dir`` holds a pool of another config / models / scans.
    """
    c = config
    out_dir = os.path.abspath(out_dir or os.path.join(workdir, "pool"))
    bad = [k for k in kinds if k not in POOL_KINDS]
    if bad:
        raise ConfigError(f"build_pool: unknown kinds {bad}; expected a subset of {POOL_KINDS}")
    shard_size, bs = int(c.pool.shard_size), int(c.pgd.batch_size)
    if shard_size < 1 or bs < 1:
        raise ConfigError(f"config.pool.shard_size={shard_size} and config.pgd.batch_size={bs} "
                          "must be >= 1")
    fpr = fpr or load_fpr(c, workdir, fpr_model_name)
    needs_gen = any(k.startswith("syn") for k in kinds)
    if needs_gen and generator is None:
        generator = load_generator(c, workdir)
    p = int(c.fpr.patch_size)
    scans = list(train_scans)
    root = patch_sets_dir(workdir)  # backgrounds and positives on disk, read by row
    bg = background_patches(scans, p, int(c.pool.background_per_scan), int(c.seed),
                            root=root) \
        if needs_gen else (np.zeros((0, p, p, p), np.float32), np.zeros(0, str),
                           np.zeros((0, 3), np.int64))
    pos = positive_patches(scans, p, root=root)
    counts = plan(c, len(bg[0]), len(pos[0]))
    counts = {k: (counts[k] if k in kinds else 0) for k in POOL_KINDS}
    fp = fingerprint(c, fpr, generator if needs_gen else None, [s.uid for s in scans])
    fp["kinds"] = list(kinds)
    shards = {k: math.ceil(n / shard_size) for k, n in counts.items()}
    man = read_manifest(out_dir)
    if man is not None:
        diffs = nested_diff(man.get("fingerprint", {}), fp, names=("pool", "current"))
        if diffs:
            raise PoolError(f"{os.path.join(out_dir, MANIFEST)}: the pool was built with a "
                            f"different config, models or scans ({len(diffs)} difference(s)):\n  "
                            + "\n  ".join(diffs) + "\nuse another out_dir or delete the pool")
    else:
        man = {"fingerprint": fp, "done": {k: [] for k in POOL_KINDS}, "kept": {}}
    man.update(items=counts, shards=shards, shard_size=shard_size, complete=False)
    os.makedirs(out_dir, exist_ok=True)
    write_manifest(out_dir, man)
    ctx = _Context(c, fpr, generator, bg, pos)
    total = sum(counts.values())
    done_items = sum(min(shard_size, counts[k] - s * shard_size)
                     for k in POOL_KINDS for s in man["done"].get(k, []))
    from tqdm.auto import tqdm

    t0, new = time.time(), 0
    with tqdm(total=total, initial=done_items, unit="sample", disable=not progress,
              desc="pool", dynamic_ncols=True) as bar:
        for kind in POOL_KINDS:
            done = set(man["done"].get(kind, []))
            for s in range(shards[kind]):
                if s in done and os.path.exists(shard_path(out_dir, kind, s)):
                    continue
                items = np.arange(s * shard_size, min((s + 1) * shard_size, counts[kind]))
                bar.set_postfix(kind=kind, shard=s)
                r = _compute(kind, items, ctx)
                keep = r.pop("keep")
                arrays = {k: v[keep] for k, v in r.items()}
                arrays["x"] = arrays["x"].astype(np.float16)
                # the score of the patch as stored: what a fine-tune's loss sees
                arrays["prob_stored"] = attacks.score_patches(fpr, arrays["x"], bs).astype(
                    np.float32)
                write_shard(shard_path(out_dir, kind, s), arrays)
                man["done"][kind] = sorted(done | {s})
                done.add(s)
                man.setdefault("kept", {})[f"{kind}/{s}"] = [int(keep.sum()), len(items)]
                write_manifest(out_dir, man)
                new += len(items)
                bar.update(len(items))
                if on_shard is not None:
                    on_shard(kind, s)
    man["complete"] = True
    write_manifest(out_dir, man)
    dt = time.time() - t0
    if new:
        log.info("pool: %d samples in %.1f s (%.2f samples/s) -> %s", new, dt, new / dt, out_dir)
    # "samples": the whole pool's (a result, the same after a resume); the rest is this
    # call's history: the samples it computed, its wall time and rate
    atomic_write_json(os.path.join(out_dir, "timing.json"),
                      {"samples": total, "samples_this_run": new, "seconds": dt,
                       "samples_per_s": new / dt if dt else None})
    return out_dir


__all__ = ["build_pool", "plan", "fingerprint", "KIND_ID", "RELEVANT_FIELDS"]
