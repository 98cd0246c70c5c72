"""Augmentation sources of the adversarially augmented FPR fine-tuning (paper Sections 3.3, 4).

Each batch of ``fpr_augmented`` mixes five groups with fixed ratios (``BalancedSampler``):

    0 real positives   1 synthetic positives   2 adversarial positives
    3 real negatives   4 adversarial negatives

with ``c.fpr.pos_fraction`` (paper: 0.5) of the batch positive, positives split by
``c.train.pos_ratios`` (real / synthetic / adversarial, paper 0.5 / 0.25 / 0.25) and negatives
by ``c.train.neg_ratios`` (real / adversarial, paper 0.5 / 0.5). A source the Table 3 row does
not use gives its share to the real patches (:func:`group_ratios`). What fills each group:

* synthetic positives: ``syn="random"`` -> G(z), z random (``c.synth.sampling``);
  ``syn="pgd"`` -> latent PGD (Eqs. 7-9), both fused into lung background patches.
* adversarial positives / negatives: ``perturb=True`` -> real positives perturbed by PGD
  (Eqs. 10-11, Fig. 6 top) / pure adversarial noise (Fig. 6 middle); ``poisson=True`` ->
  real positives / negatives with Poisson noise at a scale drawn per example from
  ``c.train.poisson_scales`` (paper Section 5.3.2: x50 and x5 rescale; Section 4: "the same
  ratio ... as used for the adversarial noise patches").

Where the adversarial patches come from (``c.train.aug_source``):

* ``"pool"``: precomputed by ``attack.py pool`` against baseline-beta-finetune (Section 4),
  read with :class:`PoolReader`. A pool patch reaches the loss **exactly as stored**: no cube
  symmetry, no crop, only the lossless float16 -> float32 cast, so the attacked model's score
  of the patch in the batch is the pool's recorded ``prob_stored`` (its score of the stored
  float16 patch; ``prob_after`` is the attack's own float32 score, within float16 rounding).
  A flip or a 90-degree rotation undoes a PGD attack, whose perturbation is tuned to the
  network's kernels in one orientation: on the demo, the attacked model scores its PGD noise
  0.80 as made and 0.16 under the 47 other cube symmetries (plain uniform noise: 0.16).
  This covers the perturbed positives, the adversarial noise and the PGD-searched synthetic
  nodules; the random synthetic nodules (``syn_random``) are kept as stored too, although
  no attack made them, so that the two synthetic rows of Table 3 (random vs PGD search)
  differ only by the search. The paper is silent on augmenting the pool; this is listed
  in the report's "Deviations from the paper".
* ``"inloop"``: the host puts a background patch (synthetic slot), the real positive
  (perturbed slot) or nothing (noise slot) into the batch with a ``kind`` code, and
  :func:`make_inloop_augment` runs the PGD engine inside the jitted train step against a frozen
  copy of the initial model (``c.train.inloop_target = "frozen"``) or the current parameters
  (``"current"``, gradients stopped). Poisson noise is always drawn inside the step. The
  order is: transform the input on the host (cube symmetry, crop), then attack it in the step,
  so the attack sees the patch the loss sees.

Real patches (and, in-loop, the backgrounds and positives before their attack) keep the
geometric augmentation of Section 3.1: a :class:`GroupSource` says whether its patches may be
transformed on the host (``geometric``).

Every host batch is a pure function of the step (sampler indices and per-example seeds), and
in-step randomness comes from the step key, so both modes resume exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial import attacks
from nodulejax.adversarial.noise import poisson_scaled
from nodulejax.adversarial.pool.store import PoolReader
from nodulejax.data.backgrounds import background_patches
from nodulejax.data.patches import random_flip_rot
from nodulejax.data.records import Subset
from nodulejax.errors import ConfigError, PoolError

# kind codes carried in the batch: what the train step still has to do to the patch
PLAIN, SYN_RANDOM, SYN_PGD, PERTURB, NOISE, POISSON = 0, 1, 2, 3, 4, 5
KIND_NAMES = {PLAIN: "plain", SYN_RANDOM: "syn_random", SYN_PGD: "syn_pgd", PERTURB: "perturb",
              NOISE: "noise", POISSON: "poisson"}
GROUPS = ("pos_real", "pos_syn", "pos_adv", "neg_real", "neg_adv")
GROUP_LABELS = np.array([1, 1, 1, 0, 0], np.int32)


# --------------------------------------------------------------------------- ratios
def group_ratios(config, row: dict | None = None) -> list[float]:
    """Flattened ratios of the five groups for a Table 3 row (``config.train`` by default).

    Unused sources give their share to the real patches of the same label, e.g. beta+syn:
    positives 0.75 / 0.25 / 0, negatives 1 / 0 -> ``[.375, .125, 0, .5, 0]`` at 50/50.
    """
    t = config.train
    syn = (row or {}).get("syn", t.syn)
    perturb = (row or {}).get("perturb", t.perturb)
    poisson = (row or {}).get("poisson", t.poisson)
    if syn not in ("none", "random", "pgd"):
        raise ConfigError(f"config.train.syn={syn!r}: expected 'none', 'random' or 'pgd'")
    pr = [float(v) for v in t.pos_ratios]
    nr = [float(v) for v in t.neg_ratios]
    if len(pr) != 3 or len(nr) != 2 or min(pr + nr) < 0:
        raise ConfigError(f"config.train.pos_ratios={tuple(pr)} must be 3 and neg_ratios="
                          f"{tuple(nr)} 2 non-negative numbers")
    adv = perturb or poisson
    if syn == "none":
        pr[0], pr[1] = pr[0] + pr[1], 0.0
    if not adv:
        pr[0], pr[2] = pr[0] + pr[2], 0.0
        nr[0], nr[1] = nr[0] + nr[1], 0.0
    if sum(pr) <= 0 or sum(nr) <= 0:
        raise ConfigError(f"config.train.pos_ratios={tuple(t.pos_ratios)} / neg_ratios="
                          f"{tuple(t.neg_ratios)} leave no positives or no negatives")
    f = float(config.fpr.get("pos_fraction", 0.5))
    return [f * v / sum(pr) for v in pr] + [(1 - f) * v / sum(nr) for v in nr]


# --------------------------------------------------------------------------- host sources

class GroupSource:
    """One sampling group: patches (or None for patches made in the step), label, kind.

    ``x``: ``(size, ...)`` patches, an ``ndarray`` or a lazy ``nodulejax.data.records`` array
    (pool shards, patch sets on disk, a :class:`~nodulejax.data.records.Subset` of one) read
    by row in :func:`gather_batch`.

    ``geometric``: the host may give the patches a cube symmetry and a crop (False for
    patches an attack made: pool kinds). ``pool_kind`` / ``meta``: the pool kind and its
    per-sample metadata (``PoolReader.arrays``), aligned with ``x``, for pool groups."""

    def __init__(self, name: str, x: np.ndarray | None, label: int, kind: int, size: int, *,
                 geometric: bool = True, pool_kind: str | None = None,
                 meta: dict | None = None):
        self.name, self.x, self.label, self.kind, self.size = name, x, label, kind, int(size)
        self.geometric, self.pool_kind, self.meta = bool(geometric), pool_kind, meta


def _pool_source(reader, name: str, pool_kind: str, label: int) -> GroupSource:
    x, meta = reader.arrays(pool_kind)
    return GroupSource(name, x, label, PLAIN, len(x), geometric=False, pool_kind=pool_kind,
                       meta=meta)


def build_sources(config, row: dict, real: dict, *, scans=None, pool_dir: str | None = None,
                  seed: int = 0, virtual_size: int = 1024,
                  patch_root: str | None = None) -> list[GroupSource]:
    """The five groups' sources for a row. ``real``: ``fpr_patches`` dict (``x``, ``y``);
    the real positives and negatives are row subsets of ``real["x"]`` (nothing is copied or
    read here).

    Groups with ratio 0 get size 0. ``virtual_size`` is the index range of a group whose
    patches are generated from nothing inside the step (in-loop adversarial noise).
    ``patch_root``: where in-loop synthesis keeps its background patches on disk
    (``WORKDIR/patches``; None: in memory)."""
    ratios = group_ratios(config, row)
    syn, perturb, poisson = row["syn"], row["perturb"], row["poisson"]
    mode = config.train.aug_source
    if mode not in ("pool", "inloop"):
        raise ConfigError(f"config.train.aug_source={mode!r}: expected 'pool' or 'inloop'")
    y = np.asarray(real["y"])
    pos, neg = Subset(real["x"], np.flatnonzero(y == 1)), Subset(real["x"], np.flatnonzero(y == 0))
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigError(f"FPR training needs positive and negative patches, got {len(pos)} "
                          f"positives and {len(neg)} negatives")
    needs_pool = mode == "pool" and (ratios[1] > 0 or (perturb and not poisson))
    reader = PoolReader(pool_dir) if needs_pool else None
    src = [GroupSource("pos_real", pos, 1, PLAIN, len(pos))]
    # synthetic positives
    if ratios[1] == 0:
        src.append(GroupSource("pos_syn", None, 1, PLAIN, 0))
    elif mode == "pool":
        src.append(_pool_source(reader, "pos_syn", "syn_pgd" if syn == "pgd" else "syn_random",
                                1))
    else:
        if scans is None:
            raise ConfigError("in-loop synthetic nodules need the training scans for backgrounds")
        bg = background_patches(scans, int(config.fpr.patch_size),
                                int(config.pool.background_per_scan), seed, root=patch_root)[0]
        if isinstance(bg, np.ndarray):  # in memory: float16 holds the image's values exactly
            bg = bg.astype(np.float16)
        src.append(GroupSource("pos_syn", bg, 1, SYN_PGD if syn == "pgd" else SYN_RANDOM,
                               len(bg)))
    # adversarial positives and negatives
    adv = {}
    for name, label, real_x, ratio, pool_kind, inloop_kind in (
            ("pos_adv", 1, pos, ratios[2], "perturb", PERTURB),
            ("neg_adv", 0, neg, ratios[4], "noise", NOISE)):
        if ratio == 0:
            adv[name] = GroupSource(name, None, label, PLAIN, 0)
        elif poisson:
            adv[name] = GroupSource(name, real_x, label, POISSON, len(real_x))
        elif mode == "pool":
            adv[name] = _pool_source(reader, name, pool_kind, label)
        elif inloop_kind == PERTURB:
            adv[name] = GroupSource(name, real_x, label, PERTURB, len(real_x))
        else:
            adv[name] = GroupSource(name, None, label, NOISE, virtual_size)
    src += [adv["pos_adv"], GroupSource("neg_real", neg, 0, PLAIN, len(neg)), adv["neg_adv"]]
    p, pr = int(config.fpr.patch_size), pos.shape[1]  # pr = p + 2 * jitter margin
    for s in src:
        allowed = ((p, p, p), (pr, pr, pr)) if s.geometric else ((p, p, p),)
        if s.x is not None and s.x.shape[1:] not in allowed:
            raise PoolError(f"augmentation group {s.name}: patches {s.x.shape[1:]} differ from "
                            f"the FPR patch size {(p, p, p)} (config.fpr.patch_size)")
    return src


def gather_batch(sources: list[GroupSource], idx, *, augment: bool, patch_size: int) -> dict:
    """Host batch for ``BatchIndices`` ``idx``: ``x (B, P, P, P) float32``, ``y (B,) int32``,
    ``kind (B,) int32``. With ``augment``, each patch of a ``geometric`` source gets the cube
    symmetry drawn from its own seed (flips and 90-degree rotations, Section 3.1); a stored
    patch larger than ``P`` (real patches cut with a ``c.fpr.jitter_vox`` margin) is cropped
    to ``P`` at an offset drawn from the same seed (a random translation of up to the margin)
    or centred without ``augment``. Pool patches (not ``geometric``) are copied as stored:
    the attacked model scores them as the pool recorded (module docstring). Each source's
    patches of the batch are read with one indexing (one pass over a file on disk)."""
    b = len(idx.group)
    x = np.zeros((b,) + (patch_size,) * 3, np.float32)
    y = np.zeros(b, np.int32)
    kind = np.zeros(b, np.int32)
    group, index = np.asarray(idx.group), np.asarray(idx.index)
    for g in np.unique(group):
        s = sources[int(g)]
        rows = np.flatnonzero(group == g)
        y[rows], kind[rows] = s.label, s.kind
        if s.x is None:
            continue
        geo = augment and s.geometric
        for i, p in zip(rows, s.x[index[rows]], strict=True):
            rng = np.random.default_rng(int(idx.seed[i]))
            extra = p.shape[0] - patch_size
            if extra > 0:
                o = rng.integers(0, extra + 1, 3) if geo else np.full(3, extra // 2)
                p = p[o[0]:o[0] + patch_size, o[1]:o[1] + patch_size, o[2]:o[2] + patch_size]
            x[i] = random_flip_rot(p, rng) if geo else p
    return {"x": x, "y": y, "kind": kind}


def max_counts(sampler, sources) -> dict[int, int]:
    """Largest number of examples of each in-step kind in any batch of the sampler's cycle
    (static sizes for the in-step attacks)."""
    out: dict[int, int] = {}
    for step in range(sampler.cycle):
        c = sampler.counts(step)
        per_kind: dict[int, int] = {}
        for g, s in enumerate(sources):
            if s.kind != PLAIN and c[g]:
                per_kind[s.kind] = per_kind.get(s.kind, 0) + int(c[g])
        for k, n in per_kind.items():
            out[k] = max(out.get(k, 0), n)
    return out


# --------------------------------------------------------------------------- in-step generation

def make_inloop_augment(config, fpr_model, *, head: str, counts: dict[int, int],
                        generator=None) -> Any:
    """Build ``augment(x, kind, key, target_vars, gen_vars, kl_weight) -> (x, attacks)`` for
    the train step.

    x: (B, P, P, P, 1) float32; kind: (B,) int32 codes. For each kind with a static maximum
    count ``counts[kind]`` the matching examples are gathered (``jnp.nonzero(..., size=n)``,
    padding index B dropped on scatter), transformed and written back:
    SYN_* -> ``attacks.synthesize_nodules`` on the backgrounds (``search`` for SYN_PGD),
    PERTURB -> ``attacks.perturb_positives``, NOISE -> ``attacks.adversarial_noise``,
    POISSON -> Poisson noise. All PGD settings from ``config.pgd``; gradients are stopped.

    ``attacks``: ``{KIND_NAMES[code]: {"index" (n,), "valid" (n,) bool, "prob_before" (n,),
    "prob_after" (n,)}}`` for the attacked kinds (SYN_PGD: the random code's score before the
    latent search; PERTURB: the clean positive; NOISE: the uniform start), scores of
    ``target_vars`` (the frozen target or the current parameters); ``index`` is the example's
    row in the batch (B for padding, ``valid`` False). The returned ``x`` holds exactly the
    scored patches.
    """
    q = config.pgd
    p = int(config.fpr.patch_size)
    scales = tuple(float(s) for s in config.train.get("poisson_scales", (50.0, 5.0)))
    thr = float(config.synth.mask_threshold)
    if (SYN_RANDOM in counts or SYN_PGD in counts) and generator is None:
        raise ConfigError("in-loop synthetic nodules need the trained synthesizer (generator)")

    def augment(x, kind, key, target_vars, gen_vars, kl_weight):
        b = x.shape[0]
        target_vars = jax.lax.stop_gradient(target_vars)
        report = {}
        for code, n in sorted(counts.items()):
            scored = None  # (prob_before, prob_after) of an attacked kind
            if n == 0:
                continue
            k = jax.random.fold_in(key, code)
            (idx,) = jnp.nonzero(kind == code, size=n, fill_value=b)
            sub = x.at[idx].get(mode="fill", fill_value=0.0)
            if code in (SYN_RANDOM, SYN_PGD):
                r = attacks.synthesize_nodules(
                    k, fpr_model, target_vars, generator, gen_vars, sub, head=head,
                    threshold=thr, kl_weight=kl_weight, eps=q.latent_eps,
                    step_size=q.latent_step, steps=int(q.latent_steps), norm=q.latent_norm,
                    search=code == SYN_PGD)
                new = r.x_pgd if code == SYN_PGD else r.x_random
                if code == SYN_PGD:
                    scored = (r.prob_random, r.prob_pgd)
            elif code == PERTURB:
                r = attacks.perturb_positives(
                    k, fpr_model, target_vars, sub, head=head, kl_weight=kl_weight,
                    eps=q.image_eps, step_size=q.image_step, steps=int(q.image_steps),
                    norm=q.image_norm)
                new, scored = r.x_adv, (r.prob_before, r.prob_after)
            elif code == NOISE:
                r = attacks.adversarial_noise(
                    k, fpr_model, target_vars, n, p, head=head, kl_weight=kl_weight,
                    eps=q.noise_eps, step_size=q.noise_step, steps=int(q.noise_steps),
                    norm=q.image_norm)
                new, scored = r.x_adv, (r.prob_before, r.prob_after)
            elif code == POISSON:
                new = poisson_scaled(k, sub, scales)
            else:
                raise ConfigError(f"unknown augmentation kind {code}")
            x = x.at[idx].set(jax.lax.stop_gradient(new).astype(x.dtype), mode="drop")
            if scored is not None:
                before, after = jax.lax.stop_gradient(scored)
                report[KIND_NAMES[code]] = {"index": idx, "valid": idx < b,
                                            "prob_before": before, "prob_after": after}
        return x, report

    return augment


__all__ = ["group_ratios", "build_sources", "gather_batch",
           "max_counts", "make_inloop_augment", "GroupSource", "GROUPS",
           "KIND_NAMES", "PLAIN", "SYN_RANDOM", "SYN_PGD", "PERTURB", "NOISE", "POISSON"]
