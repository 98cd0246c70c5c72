"""Synthesizer trainer (nodulejax.train.synth): VAE + spectral-norm WGAN-GP critic, Section 3.2.

Fixed batch of symmetric blobs (flips/rotations leave them unchanged), so the reconstruction
error must fall; the one ``synth`` checkpoint holds both networks.
"""

import json

import numpy as np
import pytest

from configs import tiny
from nodulejax.errors import ConfigError
from nodulejax.runtime import checkpoint
from nodulejax.train import synth

pytestmark = pytest.mark.slow  # synthesizer training runs: ~45 s


def _blobs(n, p):
    z, y, x = np.mgrid[:p, :p, :p] - (p - 1) / 2
    r2 = z**2 + y**2 + x**2
    return np.stack([np.exp(-r2 / (2 * (1 + i) ** 2)) * 0.8 for i in range(n)]).astype(np.float32)


def test_train_synth_runs_loss_falls_and_checkpoints(tmp_path):
    c = tiny.get_config()
    c.train.log_every = 1
    c.train.progress = False
    c.synth.steps = 4
    c.synth.n_critic = 2  # lax.scan over critic updates inside the step
    c.synth.lr = 1e-2
    p, b = c.synth.patch_size, c.synth.batch_size
    cut = {"x": _blobs(b, p)}
    vae, critic = synth.train_synth(c, str(tmp_path), None, cutouts=cut)
    rows = [json.loads(line) for line in open(f"{tmp_path}/logs/synth/metrics.jsonl")]
    rows = [r for r in rows if r["split"] == "train"]
    assert len(rows) == 4
    for k in ("loss", "l1", "kl", "critic_loss", "d_fake"):
        assert all(np.isfinite(r[k]) for r in rows), k
    assert rows[-1]["l1"] < rows[0]["l1"]
    saved = checkpoint.load_params(str(tmp_path), "synth")
    assert set(saved) == {"vae", "critic"}
    np.testing.assert_array_equal(
        np.asarray(saved["vae"]["dec_out"]["kernel"]), np.asarray(vae["dec_out"]["kernel"]))
    # the generator decodes a latent code to a nodule patch in [0, 1]
    import jax.numpy as jnp

    g = synth.vae_model(c)
    out = g.apply({"params": vae}, jnp.zeros((2, c.synth.latent_dim)), method="decode")
    assert out.shape == (2, p, p, p, 1) and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A tiny synthesizer trained for one step on three blobs: (config, workdir, vae, cut)."""
    c = tiny.get_config()
    c.train.progress = False
    c.synth.steps = 1
    wd = str(tmp_path_factory.mktemp("synth1"))
    cut = {"x": _blobs(3, c.synth.patch_size)}
    vae, _ = synth.train_synth(c, wd, None, cutouts=cut)
    return c, wd, vae, cut


def test_synth_quality_measures_reconstruction_sizes_and_the_filter(trained_once):
    import jax

    c, _, vae, cut = trained_once
    c = c.copy_and_resolve_references()
    q = synth.synth_quality(c, vae, cut, jax.random.key(0), num_samples=20)
    g = synth.vae_model(c)
    mu, _ = g.apply({"params": vae}, cut["x"][..., None], method="encode")
    rec = np.asarray(g.apply({"params": vae}, mu, method="decode"))[..., 0]
    np.testing.assert_allclose(q["recon_l1"], np.abs(rec - cut["x"]).mean(), rtol=1e-5)
    # blob i: 0.8 exp(-r^2 / 2 s^2) > thr inside r < s sqrt(2 ln(0.8 / thr)); 3 blobs -> the
    # median is blob 1 (s = 2 voxels), its mask volume about (4/3) pi r^3 voxels
    thr, sp = c.synth.mask_threshold, c.data.spacing
    r = 2.0 * np.sqrt(2 * np.log(0.8 / thr))
    assert abs(q["real_diameter_mm"][1] - 2 * r * sp) < 0.15 * 2 * r * sp
    assert q["num_cutouts"] == 3 and q["num_prior_samples"] == 20
    assert 0.0 <= q["prior_pass_rate"] <= 1.0
    # the rim fit: annotated diameters 0.5 mm below the cut-outs' mask diameters
    from nodulejax.adversarial.synthetic import nodule_diameter_mm

    d_mask = nodule_diameter_mm(cut["x"], thr, sp)
    q = synth.synth_quality(c, vae, {**cut, "diameter_mm": d_mask - 0.5}, jax.random.key(0), 20)
    assert abs(q["rim_fit"]["slope"] - 1.0) < 1e-3 and abs(q["rim_fit"]["offset_mm"] - 0.5) < 1e-2
    c.synth.diameter_rim_mm = 0.0
    c.synth.min_diameter_mm = 0.0  # every sample passes a 0 mm filter
    assert synth.synth_quality(c, vae, cut, jax.random.key(0), 20)["prior_pass_rate"] == 1.0
    c.synth.min_diameter_mm = 1e3  # none passes an impossible one
    assert synth.synth_quality(c, vae, cut, jax.random.key(0), 20)["prior_pass_rate"] == 0.0


def test_the_latent_fit_is_saved_with_the_synthesizer_and_drives_aggregate_sampling(
        trained_once):
    """train_synth writes the aggregate posterior's Gaussian next to its checkpoint;
    synth.sampling="aggregate" decodes m + A u for u ~ N(0, I), "prior" decodes u itself."""
    import jax
    import jax.numpy as jnp

    from nodulejax.errors import CheckpointError
    from nodulejax.models import classifier
    from nodulejax.models.vae import AggregatePriorGenerator, aggregate_gaussian

    c, wd, vae, cut = trained_once
    g = synth.vae_model(c)
    mu, logvar = g.apply({"params": vae}, cut["x"][..., None], method="encode")
    mean, cov = aggregate_gaussian(np.asarray(mu), np.asarray(logvar))
    with np.load(classifier.latent_fit_path(wd)) as f:
        np.testing.assert_allclose(f["mean"], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f["cov"], cov, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f["chol"] @ f["chol"].T, cov, rtol=1e-4, atol=1e-5)
        assert int(f["num_cutouts"]) == 3
    u = jax.random.normal(jax.random.key(3), (2, c.synth.latent_dim))
    prior = c.copy_and_resolve_references()
    prior.synth.sampling = "prior"
    plain = classifier.load_generator(prior, wd)
    np.testing.assert_array_equal(plain.model.apply(plain.variables, u, method="decode"),
                                  g.apply({"params": vae}, u, method="decode"))
    agg = c.copy_and_resolve_references()
    agg.synth.sampling = "aggregate"
    gen = classifier.load_generator(agg, wd)
    assert isinstance(gen.model, AggregatePriorGenerator)
    assert gen.model.latent_dim == c.synth.latent_dim
    z = jnp.asarray(mean, jnp.float32) + u @ jnp.asarray(np.linalg.cholesky(cov), jnp.float32).T
    np.testing.assert_allclose(gen.model.apply(gen.variables, u, method="decode"),
                               g.apply({"params": vae}, z, method="decode"), atol=1e-5)
    # the quality probe samples the same way
    q = synth.synth_quality(agg, vae, cut, jax.random.key(0), num_samples=8)
    assert q["sampling"] == "aggregate"
    # weights the fit does not belong to, a missing fit, an unknown mode: clear errors
    other = jax.tree.map(lambda a: a + 1.0, vae)
    with pytest.raises(CheckpointError, match="retrain the synth stage"):
        classifier.load_latent_fit(wd, other)
    with pytest.raises(CheckpointError, match="latent_fit.npz: missing"):
        classifier.load_latent_fit(wd + "/nowhere", vae)
    agg.synth.sampling = "posterior"
    with pytest.raises(ConfigError, match="synth.sampling"):
        classifier.load_generator(agg, wd)


def test_compact_fraction_tells_one_object_from_fragments():
    one = np.zeros((6, 6, 6), bool)
    one[1:4, 1:4, 1:4] = True
    scattered = np.zeros((6, 6, 6), bool)
    scattered[0, 0, 0] = scattered[5, 5, 5] = scattered[0, 5, 0] = True
    assert synth.compact_fraction(np.stack([one, scattered, np.zeros_like(one)])) == 1 / 3


def test_train_synth_without_nodules_is_a_clear_error(tmp_path):
    c = tiny.get_config()
    with pytest.raises(ConfigError, match="min_diameter_mm"):
        synth.train_synth(c, str(tmp_path), [], cutouts={"x": np.zeros((0, 8, 8, 8))})


def test_prior_fakes_reach_the_adversarial_terms_only():
    """c.synth.prior_fakes: prior decodes replace part of the fake batch for the critic and the
    generator's adversarial term; the L1 and KL terms keep every reconstruction."""
    import jax
    import optax

    c = tiny.get_config()
    p, b = c.synth.patch_size, c.synth.batch_size
    batch = {"x": _blobs(b, p)}
    tx = optax.adam(1e-2)
    state = synth.init_synth_state(c, jax.random.key(1), tx, tx)
    key = jax.random.key(2)

    def step(prior_fakes, n_critic, lambda_adv):
        c.synth.prior_fakes, c.synth.n_critic = prior_fakes, n_critic
        c.synth.lambda_adv = lambda_adv
        new, m = jax.jit(synth.make_synth_step(c, tx, tx))(state, batch, key)
        return jax.tree_util.tree_leaves(new["params"]), m

    def same(a, b):
        return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a, b, strict=True))

    # without the adversarial term (no critic, lambda_2 0) the prior decodes change nothing
    base, m0 = step(0.0, 0, 0.0)
    with_p, m1 = step(0.5, 0, 0.0)
    assert same(base, with_p) and float(m0["l1"]) == float(m1["l1"])
    # with it, the generator's update and the critic's see them
    base, m0 = step(0.0, 1, 0.1)
    with_p, m1 = step(0.5, 1, 0.1)
    assert not same(base, with_p)
    assert float(m0["l1"]) == float(m1["l1"]) and float(m0["d_fake"]) != float(m1["d_fake"])
    with pytest.raises(ConfigError, match="prior_fakes"):
        step(1.0, 1, 0.1)
