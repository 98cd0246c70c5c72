"""evaluation/probes.py: scoring and attacking patch sets in fixed batches, with the tiny
config's real DenseUNet FPR (random initial weights, Beta head; ``tiny_fpr`` in
``tests/evaluation/conftest.py``)."""

import jax.numpy as jnp
import numpy as np

from nodulejax.adversarial import noise as noises
from nodulejax.adversarial.attacks import score_patches
from nodulejax.evaluation import probes
from nodulejax.models.build import fpr_prob_fn
from nodulejax.runtime.keys import item_keys


def test_scores_match_the_model_and_do_not_depend_on_the_batch_size(tiny_fpr):
    _, fpr, x = tiny_fpr
    direct = np.asarray(fpr_prob_fn(fpr.model, "beta")(fpr.variables, jnp.asarray(x)[..., None]))
    for bs in (4, 6):  # 6 patches in batches of 4: the last batch is padded
        np.testing.assert_allclose(score_patches(fpr, x, bs), direct, atol=1e-6)
    assert score_patches(fpr, x[:0], 4).shape == (0,)
    assert np.all((direct > 0) & (direct < 1))


def test_image_attack_stays_in_its_ball_per_patch_and_moves_the_score(tiny_fpr):
    config, fpr, x = tiny_fpr
    keys = item_keys(0, 7, np.arange(len(x)))
    eps = np.array([0.0, 0.02, 0.05, 0.05, 0.1, 0.1], np.float32)
    adv = probes.image_attack(fpr, x, keys, 1.0, config, eps=eps, step_size=eps / 2)
    assert adv.shape == x.shape and adv.dtype == np.float32
    dist = np.abs(adv - x).reshape(len(x), -1).max(axis=1)
    assert np.all(dist <= eps + 1e-6) and dist[0] == 0.0  # eps 0 leaves the patch alone
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    before, after = score_patches(fpr, x, 4), score_patches(fpr, adv, 4)
    assert np.all(after[1:] < before[1:])  # label 1: the attack hides the "nodule"
    again = probes.image_attack(fpr, x, keys, 1.0, config, eps=eps, step_size=eps / 2)
    np.testing.assert_array_equal(adv, again)  # same keys, same attack


def test_noise_attack_starts_from_uniform_noise_and_fires(tiny_fpr):
    config, fpr, x = tiny_fpr
    keys = item_keys(0, 8, np.arange(4))
    adv = probes.image_attack(fpr, None, keys, 0.0, config, noise=True)
    assert adv.shape == (4, *x.shape[1:]) and adv.min() >= 0.0 and adv.max() <= 1.0
    assert len(np.unique(adv.reshape(4, -1), axis=0)) == 4  # one noise per key


def test_apply_noise_equals_the_noise_on_the_whole_set(tiny_fpr):
    _, _, x = tiny_fpr
    keys = item_keys(0, 9, np.arange(len(x)))
    fn = noises.uniform_noise
    batched = probes.apply_noise(fn, keys, x, 0.1, 4)
    whole = np.asarray(fn(jnp.asarray(keys), jnp.asarray(x)[..., None], 0.1))[..., 0]
    np.testing.assert_allclose(batched, whole, atol=1e-6)
    assert not np.allclose(batched, x)
