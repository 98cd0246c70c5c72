"""What the VAE and critic tests share: the patch and latent sizes and the "one Adam step
lowers the loss" check (their fixtures are in conftest.py)."""

import jax
import jax.numpy as jnp
import optax

P, L = 16, 8
KEY = lambda s: jax.random.key(s, impl="rbg")  # fast-compiling jitted init on XLA:CPU


def adam_lowers(loss_fn, params, lr=1e-3):
    """One Adam step on ``loss_fn`` has finite, non-zero gradients and a second step starts
    from a lower loss."""
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss, g

    p1, state, l0, g = step(params, state)
    leaves = jax.tree_util.tree_leaves(g)
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in leaves)
    assert sum(float(jnp.abs(t).sum()) for t in leaves) > 0
    _, _, l1, _ = step(p1, state)
    assert float(l1) < float(l0), (float(l0), float(l1))
