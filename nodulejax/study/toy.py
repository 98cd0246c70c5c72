"""The two-moons toy experiment of Section 5.1 / Fig. 7 (a-f).

    python -m nodulejax.study.toy --out DIR [--seed 0] [--mlp-steps 1500] [--vae-steps 2000]

A ReLU MLP plays the FPR classifier on 2-D points (label 1 = "nodule" = the inner moon):

  (a) 500 + 500 points, Gaussian noise std 0.15 (``make_moons``, numpy, no sklearn);
  (b) a long-tail subsample of 20 positives: positives drawn with probability ~exp(-4 t / pi)
      along the moon parameter t, so the right-hand end of the positive moon is under-sampled;
  (c) a small VAE (2-D latent) trained on the 20 positives; random synthetic positives G(z),
      z ~ N(0, I), added;
  (d) 20 uniform-noise negatives (uniform in the plot box) added;
  (e) PGD-searched synthetic positives (latent PGD through :mod:`nodulejax.adversarial.pgd`,
  maximising the
      baseline (b) classifier's BCE with label 1) replace the random ones;
  (f) PGD-searched negatives (uniform noise moved by input-space PGD to make the baseline fire,
      i.e. maximising the BCE with label 0) added as well.

Sampling ratios follow Section 3.3: every training set is weighted so that positives and
negatives each carry half of the loss, positives 50% real / 50% synthetic where synthetic
samples exist, negatives 50% real / 50% noise (in (f) the noise half is split equally between
uniform and PGD negatives). Each panel's MLP is trained from the same initialisation with
full-batch Adam inside one ``lax.scan`` (one compiled function for all six panels: sets are
zero-weight padded to a common size).

Outputs: ``DIR/toy.png`` (six decision-boundary panels) and ``DIR/toy.json`` with per panel:
accuracy and positive recall on the full 1000-point moons, ``pos_area_fraction`` (fraction of
the plot box predicted positive) and ``ood_pos_fraction`` (fraction of the box farther than
0.5 from every moon point that is predicted positive: the "open decision boundary" measure).
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from nodulejax.adversarial.pgd import pgd
from nodulejax.errors import ConfigError
from nodulejax.losses.fpr import bce_loss
from nodulejax.runtime.cli import run_main

BOX = (-1.5, 2.5)  # square plot / noise box, both axes
N_MAX = 1024  # padded training-set size (one compiled trainer)
HIDDEN = 64
LATENT = 2


def make_moons(n_per_class: int, noise: float, rng: np.random.Generator):
    """Two interleaved half circles (sklearn's layout). Returns x (2n, 2) float32, y (2n,) int
    with y = 1 for the inner moon, and t (2n,) the moon parameter in [0, pi]."""
    t = np.linspace(0.0, np.pi, n_per_class)
    outer = np.stack([np.cos(t), np.sin(t)], 1)
    inner = np.stack([1.0 - np.cos(t), 1.0 - np.sin(t) - 0.5], 1)
    x = np.concatenate([outer, inner]) + noise * rng.standard_normal((2 * n_per_class, 2))
    y = np.concatenate([np.zeros(n_per_class, int), np.ones(n_per_class, int)])
    return x.astype(np.float32), y, np.concatenate([t, t])


def long_tail_subsample(t: np.ndarray, n: int, rng: np.random.Generator, rate: float = 4.0):
    """Indices of n of the points, drawn without replacement with p ~ exp(-rate * t / pi)."""
    p = np.exp(-rate * t / np.pi)
    return rng.choice(len(t), size=n, replace=False, p=p / p.sum())


# --- models as pure functions -------------------------------------------------------------------


def _dense_init(key, sizes):
    ks = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), jnp.zeros(b))
        for k, a, b in zip(ks, sizes[:-1], sizes[1:], strict=True)
    ]


def _mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def fpr_logits(params, x):
    """The toy FPR: ReLU MLP 2 -> 64 -> 64 -> 1, logits (B,)."""
    return _mlp(params, x)[:, 0]


def fpr_bce(x, params, label):
    """Per-example BCE of the toy FPR against a constant label (the PGD objective):
    :func:`nodulejax.losses.fpr.bce_loss`, the project's one BCE."""
    return bce_loss(fpr_logits(params, x), jnp.full(x.shape[0], label))


def decode(vae_params, z):
    return _mlp(vae_params["dec"], z)


def latent_bce(z, vae_params, fpr_params, label):
    """L_FPR(f(G(z)), label) per example: Eq. 7-8 with an identity fusion (no background)."""
    return fpr_bce(decode(vae_params, z), fpr_params, label)


@partial(jax.jit, static_argnames=("steps",))
def train_mlp(key, x, y, w, steps: int, lr: float = 1e-2):
    """Weighted full-batch BCE, Adam; x (N_MAX, 2), y (N_MAX,), w (N_MAX,) summing to 1."""
    params = _dense_init(key, [2, HIDDEN, HIDDEN, 1])
    opt = optax.adam(lr)

    def loss(p):
        return jnp.sum(w * bce_loss(fpr_logits(p, x), y))

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, steps)
    return params


@partial(jax.jit, static_argnames=("steps",))
def train_vae(key, x, steps: int, kl_weight: float = 0.05, lr: float = 3e-3):
    """VAE 2 -> 32 -> 32 -> (mu, logvar) in R^2 -> 32 -> 32 -> 2; L1 reconstruction + KL
    (Eq. 6 without the adversarial term)."""
    k1, k2, k3 = jax.random.split(key, 3)
    params = {
        "enc": _dense_init(k1, [2, 32, 32, 2 * LATENT]),
        "dec": _dense_init(k2, [LATENT, 32, 32, 2]),
    }
    opt = optax.adam(lr)

    def loss(p, k):
        h = _mlp(p["enc"], x)
        mu, logvar = h[:, :LATENT], h[:, LATENT:]
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k, mu.shape)
        rec = jnp.sum(jnp.abs(decode(p, z) - x), 1)
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1.0 - logvar, 1)
        return jnp.mean(rec + kl_weight * kl)

    def step(carry, i):
        p, s = carry
        g = jax.grad(loss)(p, jax.random.fold_in(k3, i))
        u, s = opt.update(g, s)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params


# --- the experiment ----------------------------------------------------------------------------


def _weighted_set(groups):
    """groups: list of (x (n,2), label, total weight) -> padded x, y, w of length N_MAX."""
    xs, ys, ws = [], [], []
    for x, label, weight, _ in groups:
        if len(x) == 0 or weight == 0:
            continue
        xs.append(np.asarray(x, np.float32))
        ys.append(np.full(len(x), label, np.float32))
        ws.append(np.full(len(x), weight / len(x), np.float32))
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    pad = N_MAX - len(x)
    assert pad >= 0, len(x)
    return (
        np.pad(x, ((0, pad), (0, 0))),
        np.pad(y, (0, pad)),
        np.pad(w / w.sum(), (0, pad)),
    )


def _grid(n: int = 160):
    g = np.linspace(BOX[0], BOX[1], n, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    return g, np.stack([gx.ravel(), gy.ravel()], 1)


def _panel_metrics(params, x_full, y_full, grid, far):
    p_full = np.asarray(jax.nn.sigmoid(fpr_logits(params, jnp.asarray(x_full))))
    p_grid = np.asarray(jax.nn.sigmoid(fpr_logits(params, jnp.asarray(grid))))
    pred = p_full > 0.5
    return {
        "accuracy_full": float(np.mean(pred == (y_full == 1))),
        "recall_full": float(np.mean(pred[y_full == 1])),
        "pos_area_fraction": float(np.mean(p_grid > 0.5)),
        "ood_pos_fraction": float(np.mean(p_grid[far] > 0.5)),
    }, p_grid


def _results(models, sets, x_full, y_full, base, pts) -> tuple:
    """Per-panel metrics on the full data and the far-from-data grid, and the baseline's
    confidence on the random / PGD synthetic, noise and adversarial-noise points ``pts``.
    Returns (grid axes, {panel: grid probabilities}, result dict)."""
    g, grid = _grid()
    dist = np.min(np.linalg.norm(grid[:, None, :] - x_full[None, :, :], axis=2), axis=1)
    far = dist > 0.5
    prob = lambda p, x: np.asarray(jax.nn.sigmoid(fpr_logits(p, jnp.asarray(x))))
    result = {"panels": {}}
    grids = {}
    for p in "abcdef":
        m, grids[p] = _panel_metrics(models[p], x_full, y_full, grid, far)
        m["n_train"] = {name: len(x) for x, _, _, name in sets[p]}
        result["panels"][p] = m
    result["synthetic"] = {
        # Table 4 analogue: the baseline's confidence on random vs PGD-searched synthetic points
        "baseline_prob_random_mean": float(prob(base, pts["random"]).mean()),
        "baseline_prob_pgd_mean": float(prob(base, pts["pgd"]).mean()),
        # the under-sampled end of the positive moon is at large x (t near pi)
        "mean_x_random": float(pts["random"][:, 0].mean()),
        "mean_x_pgd": float(pts["pgd"][:, 0].mean()),
        "baseline_prob_noise_mean": float(prob(base, pts["noise"]).mean()),
        "baseline_prob_adv_neg_mean": float(prob(base, pts["adv"]).mean()),
    }
    return g, grids, result


def run_toy(
    out: str,
    seed: int = 0,
    *,
    mlp_steps: int = 1500,
    vae_steps: int = 2000,
    n_syn: int = 200,
    n_noise: int = 20,
    n_adv_neg: int = 20,
    latent_eps: float = 0.5,
    latent_step: float = 0.1,
    noise_eps: float = 0.3,
    noise_step: float = 0.05,
    pgd_steps: int = 20,
    plot: bool = True,
) -> dict:
    """Run panels (a)-(f); write DIR/toy.json (and DIR/toy.png when plot). Returns the json."""
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    k_init, k_vae, k_z, k_pgd_z, k_pgd_n = jax.random.split(key, 5)

    x_full, y_full, t_full = make_moons(500, 0.15, rng)
    pos, neg = x_full[y_full == 1], x_full[y_full == 0]
    lt = long_tail_subsample(t_full[y_full == 1], 20, rng)
    pos20 = pos[lt]
    noise = rng.uniform(BOX[0], BOX[1], (n_noise, 2)).astype(np.float32)
    noise_start = rng.uniform(BOX[0], BOX[1], (n_adv_neg, 2)).astype(np.float32)

    def fit(groups):
        x, y, w = _weighted_set(groups)
        return train_mlp(k_init, jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), mlp_steps)

    vae = train_vae(k_vae, jnp.asarray(pos20), vae_steps)
    z = jax.random.normal(k_z, (n_syn, LATENT))
    syn_random = np.asarray(decode(vae, z))

    models, sets = {}, {}
    P, N = "positive", "negative"
    sets["a"] = [(pos, 1, 0.5, P), (neg, 0, 0.5, N)]
    sets["b"] = [(pos20, 1, 0.5, P), (neg, 0, 0.5, N)]
    sets["c"] = [(pos20, 1, 0.25, P), (syn_random, 1, 0.25, "syn"), (neg, 0, 0.5, N)]
    sets["d"] = sets["c"][:2] + [(neg, 0, 0.25, N), (noise, 0, 0.25, "noise")]
    for p in "abcd":
        models[p] = fit(sets[p])

    # (e) latent PGD against the conventional (long-tail) classifier (b), Eqs. 7-9.
    base = models["b"]
    z_adv = pgd(
        latent_bce,
        z,
        k_pgd_z,
        eps=latent_eps,
        step_size=latent_step,
        steps=pgd_steps,
        bounds=None,
        loss_args=(vae, base, 1.0),
    )
    syn_pgd = np.asarray(decode(vae, z_adv))
    sets["e"] = [
        (pos20, 1, 0.25, P),
        (syn_pgd, 1, 0.25, "syn"),
        (neg, 0, 0.25, N),
        (noise, 0, 0.25, "noise"),
    ]
    models["e"] = fit(sets["e"])
    # (f) input-space PGD from uniform noise making the baseline fire (Eq. 11, label 0).
    adv_neg = np.asarray(
        pgd(
            fpr_bce,
            jnp.asarray(noise_start),
            k_pgd_n,
            eps=noise_eps,
            step_size=noise_step,
            steps=pgd_steps,
            bounds=BOX,
            loss_args=(base, 0.0),
        )
    )
    sets["f"] = sets["e"][:3] + [(noise, 0, 0.125, "noise"), (adv_neg, 0, 0.125, "adv")]
    models["f"] = fit(sets["f"])

    g, grids, result = _results(models, sets, x_full, y_full, base,
                                dict(random=syn_random, pgd=syn_pgd, noise=noise, adv=adv_neg))
    result = {"seed": seed, **result}
    result["seconds"] = round(time.time() - t0, 2)
    with open(os.path.join(out, "toy.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    if plot:
        _plot(os.path.join(out, "toy.png"), g, grids, sets, result)
    return result


_TITLES = {
    "a": "(a) full data",
    "b": "(b) long-tail positives",
    "c": "(c) + random synthetic",
    "d": "(d) + uniform noise neg.",
    "e": "(e) PGD synthetic",
    "f": "(f) + PGD negatives",
}
_STYLE = {
    "positive": ("tab:red", "o"),
    "syn": ("tab:orange", "^"),
    "negative": ("tab:blue", "o"),
    "noise": ("k", "x"),
    "adv": ("tab:purple", "s"),
}


def _plot(path, g, grids, sets, result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    n = len(g)
    for ax, p in zip(axes.ravel(), "abcdef", strict=True):
        pg = grids[p].reshape(n, n)
        ax.contourf(g, g, pg, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
        ax.contour(g, g, pg, levels=[0.5], colors="k", linewidths=1.2)
        for x, _, _, name in sets[p]:
            c, mk = _STYLE[name]
            ax.scatter(
                x[:, 0], x[:, 1], s=5 if len(x) > 100 else 16, c=c, marker=mk, lw=0.8, label=name
            )
        m = result["panels"][p]
        ax.set_title(
            f"{_TITLES[p]}\nacc {m['accuracy_full']:.2f}  pos-area "
            f"{m['pos_area_fraction']:.2f}  ood-pos {m['ood_pos_fraction']:.2f}",
            fontsize=9,
        )
        ax.set_xlim(*BOX)
        ax.set_ylim(*BOX)
        ax.set_aspect("equal")
        ax.legend(loc="lower left", fontsize=7, markerscale=1.5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


_FLAGS = {"seed": ("seed", 0, "seed of the data, the MLPs and the VAE"),
          "mlp-steps": ("mlp_steps", 1500, "steps per classifier"),
          "vae-steps": ("vae_steps", 2000, "VAE steps")}


def _define(fv):
    flags.DEFINE_string("out", None, "output folder for toy.png and toy.json", flag_values=fv)
    for name, (_, default, text) in _FLAGS.items():
        flags.DEFINE_integer(name, default, f"{text} (with --config: config.toy / config.seed)",
                             flag_values=fv)
    return ["out"]


def _main(fv) -> int:
    config, out = fv["config"].value, fv["out"].value
    vals = {}
    for name, (field, _, _) in _FLAGS.items():
        given = fv[name].present or config is None
        vals[field] = fv[name].value if given else (
            config.seed if field == "seed" else config.toy[field])
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror})") from None
    r = run_toy(out, int(vals["seed"]), mlp_steps=int(vals["mlp_steps"]),
                vae_steps=int(vals["vae_steps"]))
    for p, m in r["panels"].items():
        print(p, {k: v for k, v in m.items() if k != "n_train"})
    print("synthetic", r["synthetic"], f"{r['seconds']} s")
    return 0


def main(argv=None) -> int:
    """``python -m nodulejax.study.toy --out DIR``: the two-moons experiment (Fig. 7 a-f)."""
    return run_main("python -m nodulejax.study.toy", _define, _main, argv,
                    doc=__doc__, config="optional")


if __name__ == "__main__":
    sys.exit(main())
