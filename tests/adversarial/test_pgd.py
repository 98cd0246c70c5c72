"""Property tests for the PGD engine (nodulejax.adversarial.pgd, paper Eq. 9)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nodulejax.adversarial import pgd as pgd_mod
from nodulejax.adversarial.pgd import pgd, pgd_with_losses
from nodulejax.errors import ConfigError

D = 32  # input dimension of the synthetic task


def _mlp_apply(params, x):
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    h = jax.nn.relu(h @ params["w2"] + params["b2"])
    return (h @ params["w3"] + params["b3"])[:, 0]


def _bce(logits, labels):
    return optax.sigmoid_binary_cross_entropy(logits, labels)


def classifier_loss(x, params, labels):
    """Per-example BCE of the trained MLP: the loss PGD maximises."""
    return _bce(_mlp_apply(params, x), labels)


def linear_loss(x, w):
    return jnp.sum(x.reshape(x.shape[0], -1) * w, axis=1)


@pytest.fixture(scope="module")
def trained():
    """A small ReLU MLP trained (300 Adam steps) to tell two blobs in [0,1]^D apart."""
    rng = np.random.default_rng(0)
    n = 512
    y = (rng.random(n) < 0.5).astype(np.float32)
    mu = np.where(y[:, None] > 0, 0.6, 0.4)
    x = np.clip(mu + 0.15 * rng.standard_normal((n, D)), 0, 1).astype(np.float32)
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "w1": jax.random.normal(k[0], (D, 32)) / np.sqrt(D),
        "b1": jnp.zeros(32),
        "w2": jax.random.normal(k[1], (32, 32)) / np.sqrt(32),
        "b2": jnp.zeros(32),
        "w3": jax.random.normal(k[2], (32, 1)) / np.sqrt(32),
        "b3": jnp.zeros(1),
    }
    opt = optax.adam(1e-2)

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(lambda p: classifier_loss(x, p, y).mean())(p)
        u, s = opt.update(g, s)
        return (optax.apply_updates(p, u), s), loss

    (params, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, 300))(params)
    acc = float(jnp.mean((_mlp_apply(params, x) > 0) == (y > 0)))
    assert acc > 0.95, acc
    return params, jnp.asarray(x[:64]), jnp.asarray(y[:64])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_constraints_hold_after_every_step(trained, norm):
    params, x, y = trained
    b = x.shape[0]
    eps = jnp.linspace(0.02, 0.5, b) if norm == "linf" else jnp.linspace(0.1, 2.0, b)
    key = jax.random.PRNGKey(1)
    for k in range(0, 7):
        xa, _, _ = pgd_with_losses(
            classifier_loss,
            x,
            key,
            eps=eps,
            step_size=eps / 3,
            steps=k,
            norm=norm,
            loss_args=(params, y),
        )
        d = (xa - x).reshape(b, -1)
        size = jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)
        assert bool(jnp.all(size <= eps + 1e-5)), (k, size - eps)
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    # the step count is traced: the sweep compiled one executable for this (loss, norm)
    before = pgd_mod._pgd_jit._cache_size()
    pgd_with_losses(
        classifier_loss,
        x,
        key,
        eps=eps,
        step_size=eps / 3,
        steps=11,
        norm=norm,
        loss_args=(params, y),
    )
    assert pgd_mod._pgd_jit._cache_size() == before


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attack_raises_loss_of_trained_classifier(trained, norm):
    params, x, y = trained
    eps = 0.1 if norm == "linf" else 0.5
    xa, before, after = pgd_with_losses(
        classifier_loss,
        x,
        jax.random.PRNGKey(2),
        eps=eps,
        step_size=eps / 4,
        steps=10,
        norm=norm,
        loss_args=(params, y),
    )
    np.testing.assert_allclose(before, classifier_loss(x, params, y), rtol=1e-5)
    np.testing.assert_allclose(after, classifier_loss(xa, params, y), rtol=1e-5)
    assert float(jnp.mean(after >= before)) >= 0.95
    assert float(jnp.mean(after)) > 2 * float(jnp.mean(before))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batch_equals_one_at_a_time(trained, norm):
    params, x, y = trained
    b = x.shape[0]
    keys = jax.random.split(jax.random.PRNGKey(3), b)
    eps = jnp.linspace(0.05, 0.2, b)
    kw = dict(step_size=0.03, steps=5, norm=norm)
    xb, _, _ = pgd_with_losses(classifier_loss, x, keys, eps=eps, loss_args=(params, y), **kw)
    for i in (0, 17, 40):
        xi, _, _ = pgd_with_losses(
            classifier_loss,
            x[i : i + 1],
            keys[i : i + 1],
            eps=eps[i : i + 1],
            loss_args=(params, y[i : i + 1]),
            **kw,
        )
        np.testing.assert_allclose(xb[i : i + 1], xi, atol=1e-6)
    # a single key: example i's start comes from fold_in(key, i), whatever else is in the batch
    key = jax.random.PRNGKey(4)
    xs, _, _ = pgd_with_losses(classifier_loss, x, key, eps=eps, loss_args=(params, y), **kw)
    x2, y2 = x.at[10:].set(x[::-1][10:]), y.at[10:].set(y[::-1][10:])
    xs2, _, _ = pgd_with_losses(classifier_loss, x2, key, eps=eps, loss_args=(params, y2), **kw)
    np.testing.assert_allclose(xs[:10], xs2[:10], atol=1e-6)
    assert not np.allclose(xs[10:], xs2[10:])


def test_same_key_same_output_different_key_differs(trained):
    params, x, y = trained

    def run(seed, rs=True):
        return pgd_with_losses(
            classifier_loss,
            x,
            jax.random.PRNGKey(seed),
            eps=0.1,
            step_size=0.02,
            steps=3,
            random_start=rs,
            loss_args=(params, y),
        )[0]

    a, b, c = run(5), run(5), run(6)
    assert bool(jnp.all(a == b))
    assert not bool(jnp.all(a == c))
    # without a random start the key is irrelevant
    assert bool(jnp.all(run(5, False) == run(6, False)))


def test_linear_loss_linf_goes_to_the_corner():
    rng = np.random.default_rng(7)
    w = jnp.asarray(rng.standard_normal(50), jnp.float32)
    x0 = jnp.asarray(rng.uniform(0.3, 0.7, (4, 50)), jnp.float32)
    eps = jnp.array([0.01, 0.05, 0.1, 0.2])
    xa = pgd(
        linear_loss, x0, jax.random.PRNGKey(0), eps=eps, step_size=eps / 2, steps=6, loss_args=(w,)
    )
    np.testing.assert_allclose(xa, x0 + eps[:, None] * jnp.sign(w), atol=1e-6)


def test_linear_loss_l2_goes_along_w():
    rng = np.random.default_rng(8)
    w = jnp.asarray(rng.standard_normal(50), jnp.float32)
    x0 = jnp.asarray(rng.uniform(0.3, 0.7, (4, 50)), jnp.float32)
    eps = jnp.array([0.05, 0.1, 0.2, 0.3])
    xa = pgd(
        linear_loss,
        x0,
        jax.random.PRNGKey(0),
        eps=eps,
        step_size=eps,
        steps=8,
        norm="l2",
        random_start=False,
        loss_args=(w,),
    )
    np.testing.assert_allclose(xa, x0 + eps[:, None] * w / jnp.linalg.norm(w), atol=1e-5)


def test_unbounded_latent_and_bounds_clip():
    w = jnp.array([1.0, -1.0, 2.0])
    z0 = jnp.array([[0.99, 0.01, 3.0], [-5.0, 5.0, 0.0]])
    za = pgd(
        linear_loss,
        z0,
        jax.random.PRNGKey(0),
        eps=0.5,
        step_size=0.25,
        steps=6,
        bounds=None,
        loss_args=(w,),
    )
    np.testing.assert_allclose(za, z0 + 0.5 * jnp.sign(w), atol=1e-6)
    x0 = jnp.array([[0.99, 0.01, 0.5]])
    xa = pgd(
        linear_loss, x0, jax.random.PRNGKey(0), eps=0.5, step_size=0.25, steps=6, loss_args=(w,)
    )
    np.testing.assert_allclose(xa, [[1.0, 0.0, 1.0]], atol=1e-6)


def test_zero_gradient_and_eps_are_safe():
    x0 = jnp.full((2, 5), 0.5)
    xa = pgd(
        lambda x: jnp.zeros(x.shape[0]),
        x0,
        jax.random.PRNGKey(0),
        eps=0.0,
        step_size=0.1,
        steps=3,
        norm="l2",
    )
    assert bool(jnp.all(jnp.isfinite(xa))) and bool(jnp.all(xa == x0))


def test_bad_arguments_raise():
    x = jnp.zeros((2, 3))
    with pytest.raises(ConfigError, match="norm"):
        pgd(
            linear_loss,
            x,
            jax.random.PRNGKey(0),
            eps=0.1,
            step_size=0.1,
            steps=1,
            norm="l1",
            loss_args=(jnp.ones(3),),
        )
    with pytest.raises(ConfigError, match="bounds"):
        pgd(
            linear_loss,
            x,
            jax.random.PRNGKey(0),
            eps=0.1,
            step_size=0.1,
            steps=1,
            bounds=(1.0, 0.0),
            loss_args=(jnp.ones(3),),
        )
    with pytest.raises(ConfigError, match="keys"):
        pgd(
            linear_loss,
            x,
            jax.random.split(jax.random.PRNGKey(0), 3),
            eps=0.1,
            step_size=0.1,
            steps=1,
            loss_args=(jnp.ones(3),),
        )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_host_and_device_loops_give_the_same_iterates(trained, norm):
    """loop="host" (Python loop over one jitted step, the CPU default) and loop="device"
    (lax.fori_loop) run the same step function: same x_adv and losses; under a trace
    (PGD inside a jitted function) "auto" and "host" fall back to the device loop."""
    params, x, y = trained
    kw = dict(eps=0.1, step_size=0.03, steps=4, norm=norm, loss_args=(params, y))
    h = pgd_with_losses(classifier_loss, x, jax.random.PRNGKey(7), loop="host", **kw)
    d = pgd_with_losses(classifier_loss, x, jax.random.PRNGKey(7), loop="device", **kw)
    for a, b in zip(h, d, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert float(jnp.mean(h[2] - h[1])) > 0  # the attack did something
    inside = jax.jit(lambda x0: pgd(classifier_loss, x0, jax.random.PRNGKey(7), loop="host",
                                    **kw))(x)
    np.testing.assert_allclose(np.asarray(inside), np.asarray(h[0]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="loop"):
        pgd(classifier_loss, x, jax.random.PRNGKey(7), loop="gpu", **kw)


def test_sharded_batch_gives_the_same_attack(trained):
    """shard="auto" splits the batch over the test session's two CPU devices (conftest.py;
    the study gets one per core): same iterates and losses as one device, per-example eps,
    gathered back to one default-device array; a batch that does not split evenly and a
    traced call stay on one device."""
    from nodulejax.runtime import devices

    assert jax.local_device_count() == 2 and devices.batch_mesh().size == 2
    params, x, y = trained
    kw = dict(eps=jnp.linspace(0.05, 0.2, x.shape[0]), step_size=0.03, steps=4,
              loss_args=(params, y))
    one = pgd_with_losses(classifier_loss, x, jax.random.PRNGKey(3), shard="none", **kw)
    two = pgd_with_losses(classifier_loss, x, jax.random.PRNGKey(3), shard="auto", **kw)
    # XLA compiles the 32-example halves itself: matmul rounding may differ in the last bits
    # (losses ~1e-6), which can flip the sign of a near-zero gradient entry in x_adv
    assert float(jnp.mean(one[0] == two[0])) > 0.99
    np.testing.assert_allclose(np.asarray(two[0]), np.asarray(one[0]), atol=2 * 0.03 + 1e-6)
    for a, b in zip(one[1:], two[1:], strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    assert all(len(b.sharding.device_set) == 1 for b in two)
    assert float(jnp.mean(two[2] - two[1])) > 0
    # the input really was split: the jitted step saw two 32-example shards
    x_sh = devices.put_batch(x, devices.batch_mesh())
    assert [s.data.shape[0] for s in x_sh.addressable_shards] == [32, 32]
    odd = pgd(classifier_loss, x[:63], jax.random.PRNGKey(3), eps=0.1, step_size=0.03, steps=2,
              loss_args=(params, y[:63]))
    odd_one = pgd(classifier_loss, x[:63], jax.random.PRNGKey(3), eps=0.1, step_size=0.03,
                  steps=2, loss_args=(params, y[:63]), shard="none")
    np.testing.assert_array_equal(np.asarray(odd), np.asarray(odd_one))
    with pytest.raises(ConfigError, match="shard"):
        pgd(classifier_loss, x, jax.random.PRNGKey(3), shard="gpu", **kw)
