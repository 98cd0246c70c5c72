"""The pool and stress tests' shared set-up (tests/adversarial/pool/test_build.py,
tests/evaluation/test_stress.py; built once per session by the ``pool_setup`` fixture of
tests/conftest.py): a tiny phantom, the real DenseUNet3D FPR briefly trained on its patches and
saved through the real checkpoint code, and a small differentiable blob generator with the
VAE.decode convention (the synthesizer's VAE belongs to another module; a randomly initialised
VAE does not produce nodule-like blobs above the fusion threshold)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from configs import tiny
from nodulejax.data import luna16, prepare
from nodulejax.data.patchsets import fpr_patches
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.losses.fpr import fpr_loss
from nodulejax.models.build import fpr_model
from nodulejax.models.classifier import GenHandle
from nodulejax.runtime import checkpoint


class BlobGen(nn.Module):
    """Stand-in generator: a Gaussian blob whose amplitude, radius and offset depend on z."""

    latent_dim: int = 4
    patch_size: int = 8

    @nn.compact
    def decode(self, z):
        h = nn.Dense(5)(z)
        amp = 0.4 + 0.5 * nn.sigmoid(h[:, 0])
        rad = 1.2 + 1.0 * nn.sigmoid(h[:, 1])
        off = 0.5 * jnp.tanh(h[:, 2:5])
        c = jnp.arange(self.patch_size) - (self.patch_size - 1) / 2
        g = jnp.stack(jnp.meshgrid(c, c, c, indexing="ij"), -1)  # (p, p, p, 3)
        d2 = jnp.sum((g[None] - off[:, None, None, None]) ** 2, -1)
        blob = amp[:, None, None, None] * jnp.exp(-d2 / (2 * rad[:, None, None, None] ** 2))
        return blob[..., None]

    def __call__(self, z):
        return self.decode(z)


def _tiny():
    try:
        return tiny.get_config()
    except TypeError:  # configs/demo.py overrides fpr.growth (tuple in default) with an int
        import ml_collections

        from configs import default

        orig = default.get_config
        default.get_config = lambda: ml_collections.ConfigDict(orig().to_dict(), type_safe=False)
        try:
            return tiny.get_config()
        finally:
            default.get_config = orig


def tiny_config():
    c = _tiny()
    c.data.spacing = 2.0
    c.pgd.batch_size = 4
    c.pool.shard_size = 4
    c.pool.num_noise = 6
    c.pool.background_per_scan = 1
    c.stress.num_synthetic = 8
    return c


def train_fpr(config, scans, steps=30):
    """A few full-batch Adam steps of the real DenseUNet3D (Beta head) on the phantom's
    candidate patches -> (params, training accuracy)."""
    model = fpr_model(config, "beta")
    data = fpr_patches(scans, int(config.fpr.patch_size), max_neg_per_scan=6)
    x = jnp.asarray(data["x"], jnp.float32)[..., None]
    y = jnp.asarray(data["y"], jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x[:1], task="cls")["params"]
    tx = optax.adam(3e-3)

    def step(carry, _):
        p, s = carry
        g = jax.grad(lambda p: jnp.mean(fpr_loss(
            model.apply({"params": p}, x, task="cls"), y, head="beta", kl_weight=0.1)))(p)
        u, s = tx.update(g, s)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, steps))(params)
    return jax.device_get(params), None


def build_pool_setup(tmp_path_factory):
    """(config, workdir, generator, scans): a 4-scan phantom, checkpoints/
    fpr_baseline-beta-finetune (briefly trained) and fpr_beta+syn (its weights * 1.01), and
    the blob generator (the session fixture ``pool_setup`` of tests/conftest.py)."""
    root = str(tmp_path_factory.mktemp("phantom_pool"))
    generate_dataset(root, num_scans=4, seed=3, size_scale=0.3, num_subsets=4,
                     max_voxels=300_000)
    scans = prepare.prepare_folds(luna16.Luna16Dataset(root), [0, 1, 2, 3], spacing=2.0,
                                  window=(-1000.0, 400.0))
    config = tiny_config()
    workdir = str(tmp_path_factory.mktemp("work"))
    params, _ = train_fpr(config, scans)  # brief: near-constant scores, see module doc
    for name, p in (("fpr_baseline-beta-finetune", params),
                    ("fpr_beta+syn", jax.tree.map(lambda a: a * 1.01, params))):
        with checkpoint.ModelCheckpoints(checkpoint.model_dir(workdir, name), config=config,
                                         async_save=False) as m:
            m.save(1, {"params": p})
    gen = BlobGen(latent_dim=int(config.synth.latent_dim),
                  patch_size=int(config.synth.patch_size))
    gvars = gen.init(jax.random.PRNGKey(5), jnp.zeros((1, gen.latent_dim)), method="decode")
    return config, workdir, GenHandle(gen, gvars), scans
