"""Tests for nodulejax.adversarial.attacks (paper Sections 3.2, 3.3, 5.3).

The FPR and the generator are small stand-in flax modules with the package's output conventions
(DenseUNet3D.apply(vars, x, task="cls") -> Beta evidence (B, 2); VAE.decode(z) -> (B,p,p,p,1)
in [0, 1] with a latent_dim field); the loss and the fusion are the real nodulejax.losses and
nodulejax.adversarial.fusion.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nodulejax.adversarial import attacks
from nodulejax.losses.fpr import fpr_loss

P = 8  # FPR patch size
G = 6  # generator patch size
HEAD = "beta"


class TinyFPR(nn.Module):
    """Stand-in FPR (an MLP over the voxels, fast on CPU) with the Beta-head convention."""

    @nn.compact
    def __call__(self, x, task="cls"):
        h = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.softplus(nn.Dense(2)(h))


class TinyGen(nn.Module):
    """A differentiable blob generator: amplitude and radius are functions of z."""

    latent_dim: int = 4

    @nn.compact
    def decode(self, z):
        amp = 0.5 + 0.5 * nn.sigmoid(nn.Dense(1)(z))
        rad = 1.0 + 1.5 * nn.sigmoid(nn.Dense(1)(z))
        c = jnp.arange(G) - (G - 1) / 2
        d2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
        blob = amp[:, :, None, None] * jnp.exp(-d2[None] / (2 * rad[:, :, None, None] ** 2))
        return blob[..., None]

    def __call__(self, z):
        return self.decode(z)


def _blob(n, rng, amp=0.6):
    c = np.arange(P) - (P - 1) / 2
    d2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    return amp * np.exp(-d2 / (2 * 1.5**2))[None, ..., None] * np.ones((n, 1, 1, 1, 1))


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    n = 64
    bg = (0.2 + 0.05 * rng.standard_normal((n, P, P, P, 1))).clip(0, 1)
    y = (np.arange(n) % 2).astype(np.float32)
    x = np.clip(bg + y[:, None, None, None, None] * _blob(n, rng), 0, 1).astype(np.float32)
    model = TinyFPR()
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))
    opt = optax.adam(3e-3)

    def step(carry, _):
        p, s = carry
        loss = lambda p: fpr_loss(model.apply(p, x, task="cls"), y, head=HEAD).mean()
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, 150))(params)
    prob = attacks.fpr_probabilities(model, params, jnp.asarray(x), head=HEAD)
    assert float(jnp.mean((prob > 0.5) == (y > 0))) > 0.9
    gen = TinyGen()
    gvars = gen.init(jax.random.PRNGKey(1), jnp.zeros((1, 4)), method="decode")
    return model, params, gen, gvars, jnp.asarray(x), y, jnp.asarray(bg[y == 0], jnp.float32)


def _inside(xa, x0, eps):
    assert float(jnp.max(jnp.abs(xa - x0))) <= eps + 1e-6
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0


def test_perturb_positives_lowers_and_negatives_raise_confidence(setup):
    model, params, _, _, x, y, _ = setup
    pos, neg = x[y == 1][:16], x[y == 0][:16]
    kw = dict(head=HEAD, eps=0.05, step_size=0.01, steps=10)
    r = attacks.perturb_positives(jax.random.PRNGKey(0), model, params, pos, **kw)
    _inside(r.x_adv, pos, 0.05)
    assert float(r.prob_after.mean()) < float(r.prob_before.mean()) - 0.05
    np.testing.assert_allclose(
        r.prob_before, attacks.fpr_probabilities(model, params, pos, head=HEAD), rtol=1e-5
    )
    r = attacks.perturb_negatives(jax.random.PRNGKey(0), model, params, neg, **kw)
    _inside(r.x_adv, neg, 0.05)
    assert float(r.prob_after.mean()) > float(r.prob_before.mean()) + 0.05


def test_adversarial_noise_fires(setup):
    model, params, *_ = setup
    r = attacks.adversarial_noise(
        jax.random.PRNGKey(3), model, params, 16, P, head=HEAD, eps=0.3, step_size=0.05, steps=10
    )
    assert r.x_adv.shape == (16, P, P, P, 1)
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    assert float(r.prob_after.mean()) > float(r.prob_before.mean())
    # the start is the uniform noise of the same per-example keys
    k_start, _ = attacks._split_keys(jax.random.PRNGKey(3), 16)
    x0 = attacks.uniform_noise_patches(k_start, 16, P)
    _inside(r.x_adv, x0, 0.3)


def test_synthesize_nodules_pgd_is_harder_than_random(setup):
    model, params, gen, gvars, _, _, bg = setup
    bg = bg[:16]
    kw = dict(head=HEAD, threshold=0.1, eps=0.15, step_size=0.05, steps=20)
    r = attacks.synthesize_nodules(jax.random.PRNGKey(4), model, params, gen, gvars, bg, **kw)
    assert r.x_pgd.shape == bg.shape and r.nodule_pgd.shape == (16, G, G, G, 1)
    assert float(jnp.max(jnp.abs(r.z_adv - r.z))) <= 0.15 + 1e-6
    assert float(r.prob_pgd.mean()) < float(r.prob_random.mean())
    # the fused patch is the background outside the mask
    outside = attacks.center_fit(r.nodule_pgd, P) <= 0.1
    assert bool(jnp.all(jnp.where(outside, r.x_pgd == bg, True)))
    # no search: random == pgd; same key -> same codes
    r0 = attacks.synthesize_nodules(
        jax.random.PRNGKey(4), model, params, gen, gvars, bg, search=False, **kw
    )
    assert bool(jnp.all(r0.z == r.z)) and bool(jnp.all(r0.x_pgd == r0.x_random))
    np.testing.assert_allclose(r0.prob_random, r.prob_random, rtol=1e-6)


def test_center_fit_pads_and_crops():
    x = jnp.ones((2, 4, 4, 4, 1))
    y = attacks.center_fit(x, 8)
    assert y.shape == (2, 8, 8, 8, 1) and float(y.sum()) == 2 * 64
    assert float(y[0, 2:6, 2:6, 2:6].min()) == 1.0
    assert attacks.center_fit(y, 4).shape == (2, 4, 4, 4, 1)
    assert float(attacks.center_fit(y, 4).min()) == 1.0
