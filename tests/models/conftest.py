"""Fixtures of the VAE and critic tests (test_vae.py, test_critic.py): a batch of patches and
the two small initialised networks, built once per module."""

import jax
import pytest

from nodulejax.models.critic import Critic
from nodulejax.models.vae import VAE
from tests.models.helpers import KEY, L, P


@pytest.fixture(scope="module")
def x():
    return jax.random.uniform(jax.random.PRNGKey(0), (3, P, P, P, 1))


@pytest.fixture(scope="module")
def vae(x):
    m = VAE(latent_dim=L, width=4, patch_size=P, conv_impl="xla3d")
    return m, jax.jit(m.init)(KEY(1), x[:1], jax.random.PRNGKey(2))


@pytest.fixture(scope="module")
def critic(x):
    m = Critic(width=4, conv_impl="xla3d")
    return m, jax.jit(m.init)(KEY(3), x[:1])
