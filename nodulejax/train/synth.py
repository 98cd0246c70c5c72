"""Nodule synthesizer training: VAE + WGAN-GP critic with spectral norm (Section 3.2).

Data: context-free nodules cut out with their masks, boundaries blurred by a distance
transform (``nodulejax.data.patchsets.nodule_cutouts``), with a random cube symmetry (flips
and 90-degree rotations) per example from the step's seeds: the phantom has few real nodules.

One training step (one jitted function, so a killed run resumes exactly):

1. ``c.synth.n_critic`` critic updates (``lax.scan``), each with fresh reconstructions
   ``x~ = G(z), z ~ N(mu, sigma^2)`` of the real batch and fresh gradient-penalty draws,
   minimising Eq. 5: ``L_D = mean D(x~) - mean D(x) + gp_weight * GP`` (gp_weight 10).
2. one encoder + generator update minimising Eq. 6:
   ``|x~ - x|_1 + lambda_1 KL(N(mu, sigma^2) || N(0, I)) - lambda_2 mean D(x~)``
   (lambda_1 = ``c.synth.lambda_kl`` = 1e-5, lambda_2 = ``c.synth.lambda_adv`` = 0.1; of
   ``L_WGAN-GP`` only ``D(x~)`` depends on the generator, ``losses.synth_generator_loss``).

Prior fakes (``c.synth.prior_fakes``, a fraction in [0, 1), default 0 = Eq. 4 as written):
the last ``round(fraction x B)`` fakes of each batch, for the critic and for the generator's
adversarial term, are decodes ``G(z)`` of prior codes ``z ~ N(0, I)`` instead of
reconstructions (the VAE/GAN of Larsen et al. 2016, who found it beneficial to show the
critic samples from both p(z) and q(z|x)). Eq. 4 only judges reconstructions, so nothing
teaches the decoder what the codes that random sampling and the latent PGD start from
(Section 3.2: ``z ~ N(0, 1)``) should look like. The L1 and KL terms keep every
reconstruction; the critic's batch is unchanged (the decodes add one decoder pass on
that fraction per critic and generator update).

Both networks live in one checkpoint ``synth``: state ``{"params": {"vae", "critic"},
"critic_extra", "opt_vae", "opt_critic"}`` (``critic_extra``: non-parameter critic variables,
e.g. spectral-norm power-iteration vectors). ``load_params(workdir, "synth")["vae"]`` is the
generator used by the attacks (``VAE.decode``). After training, the aggregate posterior of the
training cut-outs is fitted by a Gaussian (:func:`fit_latent`, ``models.vae.aggregate_gaussian``)
and written next to the checkpoint (``models.classifier.save_latent_fit``): the random codes of
``c.synth.sampling = "aggregate"``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nodulejax.adversarial.synthetic import diameter_of_voxels, filter_diameter_mm
from nodulejax.data.patches import random_flip_rot
from nodulejax.data.patchsets import nodule_cutouts
from nodulejax.errors import ConfigError
from nodulejax.experiments import SYNTH_MODEL
from nodulejax.losses import synth as losses
from nodulejax.models.build import critic_model, vae_model
from nodulejax.models.classifier import generator_handle, sampling_of, save_latent_fit
from nodulejax.models.vae import aggregate_gaussian, latent_variables
from nodulejax.train.loop import fit
from nodulejax.train.sampler import IndexSampler


def _split_vars(variables):
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def _critic_apply(critic, params, extra, x, update: bool):
    """Critic scores (B,) and its non-parameter variables (empty for the stateless
    spectral-norm critic of ``models.critic``; advanced when ``update`` otherwise)."""
    variables = {"params": params, **extra}
    if extra and update:
        out, new = critic.apply(variables, x, mutable=list(extra))
        return out, dict(new)
    return critic.apply(variables, x), extra


def init_synth_state(config, key, tx_vae, tx_critic):
    p = int(config.synth.patch_size)
    x = jnp.zeros((1, p, p, p, 1), jnp.float32)
    vae, critic = vae_model(config), critic_model(config)
    k1, k2, k3 = jax.random.split(key, 3)
    vparams = jax.jit(vae.init)(k1, x, k3)["params"]
    cparams, extra = _split_vars(jax.jit(critic.init)(k2, x))
    return {"params": {"vae": vparams, "critic": cparams}, "critic_extra": extra,
            "opt_vae": tx_vae.init(vparams), "opt_critic": tx_critic.init(cparams)}


def make_synth_step(config, tx_vae, tx_critic):
    """``train_step(state, batch, key)`` of Section 3.2 (see module doc)."""
    s = config.synth
    vae, critic = vae_model(config), critic_model(config)
    n_critic = int(s.n_critic)
    lam_kl, lam_adv, gp = float(s.lambda_kl), float(s.lambda_adv), float(s.gp_weight)
    prior_frac = float(s.get("prior_fakes", 0.0))
    if n_critic < 0:
        raise ConfigError(f"config.synth.n_critic={n_critic} must be >= 0")
    if not 0.0 <= prior_frac < 1.0:
        raise ConfigError(f"config.synth.prior_fakes={prior_frac}: expected a fraction of the "
                          f"batch in [0, 1)")

    def with_prior(vp, rec, k):
        """rec (B, P, P, P, 1) with its last round(prior_frac B) items replaced by
        decodes of z ~ N(0, I) drawn from ``k`` (module doc); rec itself when none."""
        b = rec.shape[0]
        n = int(round(prior_frac * b))
        if n == 0:
            return rec
        z = jax.random.normal(k, (n, int(vae.latent_dim)), rec.dtype)
        return jnp.concatenate([rec[:b - n], vae.apply({"params": vp}, z, method="decode")])

    def train_step(state, batch, key):
        x = batch["x"].astype(jnp.float32)[..., None]
        vp = state["params"]["vae"]

        def critic_iter(carry, k):
            cp, extra, opt = carry
            k_rec, k_gp = jax.random.split(k)
            fake, _, _ = vae.apply({"params": vp}, x, k_rec)
            fake = with_prior(vp, fake, jax.random.fold_in(k, 2))

            def loss_fn(cp):
                fn = lambda z: _critic_apply(critic, cp, extra, z, False)[0]
                return losses.wgan_gp_critic_loss(fn, x, fake, k_gp, gp_weight=gp)

            loss, g = jax.value_and_grad(loss_fn)(cp)
            _, extra = _critic_apply(critic, cp, extra, x, True)
            upd, opt = tx_critic.update(g, opt, cp)
            return (optax.apply_updates(cp, upd), extra, opt), loss

        keys = jax.random.split(jax.random.fold_in(key, 0), max(n_critic, 1))[:n_critic]
        (cp, extra, opt_c), c_losses = jax.lax.scan(
            critic_iter, (state["params"]["critic"], state["critic_extra"], state["opt_critic"]),
            keys)

        def gen_loss(vp):
            rec, mu, logvar = vae.apply({"params": vp}, x, jax.random.fold_in(key, 1))
            fake = with_prior(vp, rec, jax.random.fold_in(key, 2))
            d_fake, _ = _critic_apply(critic, cp, extra, fake, False)
            total = losses.synth_generator_loss(rec, x, mu, logvar, d_fake, lam_kl, lam_adv)
            return total, (jnp.mean(losses.l1_recon(rec, x)),
                           jnp.mean(losses.vae_kl(mu, logvar)), jnp.mean(d_fake))

        (g_loss, (l1, kl, dfake)), g = jax.value_and_grad(gen_loss, has_aux=True)(vp)
        upd, opt_v = tx_vae.update(g, state["opt_vae"], vp)
        new = {"params": {"vae": optax.apply_updates(vp, upd), "critic": cp},
               "critic_extra": extra, "opt_vae": opt_v, "opt_critic": opt_c}
        c_loss = jnp.mean(c_losses) if n_critic else jnp.float32(0.0)
        return new, {"loss": g_loss, "l1": l1, "kl": kl, "d_fake": dfake, "critic_loss": c_loss}

    return train_step


def train_synth(config, workdir: str, train_scans, *, progress: bool | None = None,
                cutouts: dict | None = None):
    """Train the synthesizer on the training scans' nodules -> (vae_params, critic_params).

    ``cutouts``: precomputed ``nodule_cutouts`` dict (``x (N, p, p, p)``) to skip cutting.
    Model name ``synth``; ``c.synth.steps`` generator steps, Adam ``c.synth.lr``
    (beta1 0.5, beta2 0.9 as in Gulrajani et al. 2017 for both networks).
    """
    s = config.synth
    p, bs, seed = int(s.patch_size), int(s.batch_size), int(config.seed)
    data = cutouts if cutouts is not None else nodule_cutouts(
        list(train_scans), p, min_diameter_mm=float(s.get("train_min_diameter_mm", 0.0)))
    xs = np.asarray(data["x"], np.float32)
    if len(xs) == 0:
        dmin = s.get("train_min_diameter_mm", 0.0)
        raise ConfigError(f"train_synth: no nodule cut-outs of at least "
                          f"config.synth.train_min_diameter_mm={dmin} mm in "
                          f"the {len(train_scans)} training scans")
    tx_vae = optax.adam(float(s.lr), b1=0.5, b2=0.9)
    tx_critic = optax.adam(float(s.lr), b1=0.5, b2=0.9)
    key = jax.random.key(seed)
    # rbg key for the initialisers: XLA:CPU compiles them far faster than threefry's
    state = init_synth_state(config, jax.random.key(seed + 1, impl="rbg"), tx_vae, tx_critic)
    sampler = IndexSampler(len(xs), bs, seed)

    def batch_fn(step):
        b = sampler.batch(step).take(jax.process_index(), jax.process_count())  # this host's
        return {"x": np.stack([random_flip_rot(xs[i], int(sd)) for i, sd in
                               zip(b.index, b.seed, strict=False)]).astype(np.float32)}

    res = fit(make_synth_step(config, tx_vae, tx_critic), state, batch_fn,
              num_steps=int(s.steps), workdir=workdir, model_name=SYNTH_MODEL, config=config,
              key=key, progress=bool(config.train.get("progress", True)) if progress is None
              else progress)
    params = jax.device_get(res.state["params"])
    mean, cov = fit_latent(config, params["vae"], xs)
    save_latent_fit(workdir, params["vae"], mean, cov, len(xs))
    return params["vae"], params["critic"]


@functools.lru_cache(maxsize=8)
def _encoder(vae):
    return jax.jit(lambda p, x: vae.apply({"params": p}, x[..., None], method="encode"))


def _encode_all(config, vae_params, xs, batch: int = 64):
    """(mu, logvar), each (N, L), of the cut-outs xs (N, P, P, P) under ``vae_params``."""
    enc = _encoder(vae_model(config))
    out = [enc(vae_params, jnp.asarray(xs[i:i + batch], jnp.float32))
           for i in range(0, len(xs), batch)]
    return (np.concatenate([np.asarray(m) for m, _ in out]),
            np.concatenate([np.asarray(v) for _, v in out]))


def fit_latent(config, vae_params, xs):
    """Gaussian fit (mean (L,), cov (L, L)) of the aggregate posterior of the cut-outs
    ``xs`` (N, P, P, P) (``models.vae.aggregate_gaussian``): the codes the encoder gives the
    training nodules, as one distribution to sample new ones from."""
    return aggregate_gaussian(*_encode_all(config, vae_params, np.asarray(xs, np.float32)))


def compact_flags(masks, share: float = 0.9) -> np.ndarray:
    """(N,) bool for masks (N, P, P, P) bool: non-empty, with at least ``share`` of their
    voxels in the largest 26-connected component (a nodule, not scattered fragments)."""
    from scipy import ndimage

    out = []
    for m in np.asarray(masks, bool):
        lab, n = ndimage.label(m, structure=np.ones((3, 3, 3)))
        out.append(bool(n) and np.bincount(lab.ravel())[1:].max() >= share * m.sum())
    return np.asarray(out, bool)


def compact_fraction(masks, share: float = 0.9) -> float:
    """Fraction of the masks (N, P, P, P) bool that are one compact object
    (:func:`compact_flags`)."""
    return float(compact_flags(masks, share).sum() / max(len(masks), 1))


def synth_quality(config, vae_params, cutouts: dict, key, num_samples: int = 500) -> dict:
    """How well the trained synthesizer makes nodules like those it learnt from (Section 3.2).

    * ``recon_l1``: mean |G(mu(x)) - x| over the training cut-outs ``cutouts["x"]`` (N, P, P, P)
      (the first term of Eq. 6, decoded from the posterior mean, intensities in [0, 1]);
    * ``prior_pass_rate``: the fraction of ``num_samples`` random codes from ``key`` (the
      random sampling of Section 3.2, through the generator of ``c.synth.sampling``
      (``models.classifier.generator_handle``), recorded as ``sampling``) whose nodule
      reaches ``c.synth.min_diameter_mm`` (equivalent-sphere diameter of the fusion mask
      ``> c.synth.mask_threshold``, Section 5.3.1's filter), per single draw (the pool and
      Table 4 retry up to ``c.pool.max_tries``);
    * ``prior_diameter_mm`` / ``real_diameter_mm``: 10th, 50th and 90th percentiles of that
      diameter for the prior samples and for the cut-outs (same mask rule, so the blurred rim
      of the cut-outs counts in both), ``prior_peak`` / ``real_peak`` of the maximum intensity;
    * ``prior_compact_fraction`` / ``real_compact_fraction``: :func:`compact_fraction` of the
      fusion masks (one object, not fragments);
    * ``rim_fit``: least squares ``mask diameter = slope x annotated + offset_mm`` over the
      cut-outs (``cutouts["diameter_mm"]``), the measurement behind ``c.synth.diameter_rim_mm``
      (the pass rate subtracts that rim, as the filter of ``adversarial.synthetic`` does).
    """
    s = config.synth
    vae = vae_model(config)
    thr, sp = float(s.mask_threshold), float(config.data.spacing)
    xs = np.asarray(cutouts["x"], np.float32)
    decode = jax.jit(lambda p, z: vae.apply({"params": p}, z, method="decode")[..., 0])
    mu, logvar = _encode_all(config, vae_params, xs)
    l1 = [np.abs(np.asarray(decode(vae_params, mu[i:i + 64])) - xs[i:i + 64])
          .mean(axis=(1, 2, 3)) for i in range(0, len(xs), 64)]
    gen = generator_handle(config, vae_params, latent_variables(*aggregate_gaussian(mu, logvar))
                           if sampling_of(config) == "aggregate" else None)
    sample = jax.jit(lambda v, u: gen.model.apply(v, u, method="decode")[..., 0])
    u = jax.random.normal(key, (int(num_samples), int(s.latent_dim)), jnp.float32)
    prior = np.concatenate([np.asarray(sample(gen.variables, u[i:i + 64]))
                            for i in range(0, len(u), 64)])
    d_prior = diameter_of_voxels((prior > thr).sum(axis=(1, 2, 3)), sp)
    d_real = diameter_of_voxels((xs > thr).sum(axis=(1, 2, 3)), sp)
    pct = lambda v: [round(float(np.percentile(v, q)), 3) for q in (10, 50, 90)]
    rim = float(s.get("diameter_rim_mm", 0.0))
    out = {"recon_l1": float(np.concatenate(l1).mean()), "num_cutouts": int(len(xs)),
           "sampling": sampling_of(config),
           "num_prior_samples": int(num_samples), "diameter_rim_mm": rim,
           "prior_pass_rate": float(np.mean(filter_diameter_mm((prior > thr).sum(
               axis=(1, 2, 3)), config) >= float(s.min_diameter_mm))),
           "min_diameter_mm": float(s.min_diameter_mm),
           "prior_diameter_mm": pct(d_prior), "real_diameter_mm": pct(d_real),
           "prior_peak": pct(prior.max(axis=(1, 2, 3))), "real_peak": pct(xs.max(axis=(1, 2, 3)))}
    out["prior_compact_fraction"] = compact_fraction(prior > thr)
    out["real_compact_fraction"] = compact_fraction(xs > thr)
    ann = np.asarray(cutouts.get("diameter_mm", ()), np.float64)
    if len(ann) >= 3 and np.ptp(ann) > 0:  # the rim: mask diameter vs annotated diameter
        slope, offset = np.polyfit(ann, d_real, 1)
        out["rim_fit"] = {"slope": round(float(slope), 4), "offset_mm": round(float(offset), 3),
                          "r": round(float(np.corrcoef(ann, d_real)[0, 1]), 4)}
    return out


__all__ = ["train_synth", "make_synth_step", "init_synth_state", "synth_quality", "fit_latent",
           "compact_fraction", "compact_flags"]
