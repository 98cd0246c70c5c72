"""nodulejax.adversarial.synthetic: the equivalent-sphere diameter and the >= min diameter
filter of Section 5.3.1 (``synthesize_filtered`` runs in tests/adversarial/pool/test_build.py
on a trained tiny FPR and generator)."""

import ml_collections
import numpy as np
import pytest

from nodulejax.adversarial import synthetic
from nodulejax.errors import ConfigError


def test_nodule_diameter_and_filter():
    c = np.arange(32) - 15.5
    d2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    spheres = np.stack([(d2 <= r**2).astype(np.float32) for r in (5.0, 8.0, 10.0)])
    d = synthetic.nodule_diameter_mm(spheres[..., None], 0.5, 0.625)
    np.testing.assert_allclose(d, 2 * np.array([5.0, 8.0, 10.0]) * 0.625, rtol=0.05)
    d2mm = synthetic.nodule_diameter_mm(spheres, 0.5, (1.25, 1.25, 1.25))
    np.testing.assert_allclose(d2mm, 2 * d, rtol=1e-9)
    keep = synthetic.diameter_ok(spheres, 0.5, 0.625, 7.0)
    assert keep.tolist() == [False, True, True]


def test_diameter_of_voxels_is_the_equivalent_sphere():
    vox = np.array([1.0, 8.0, 1000.0])
    d = synthetic.diameter_of_voxels(vox, (2.0, 2.0, 2.0))
    np.testing.assert_allclose(np.pi / 6 * d**3, vox * 8.0, rtol=1e-12)
    np.testing.assert_allclose(synthetic.diameter_of_voxels(vox, 2.0), d, rtol=1e-12)


def test_filter_diameter_subtracts_the_rim_and_refuses_a_negative_one():
    config = ml_collections.ConfigDict({"data": {"spacing": 2.0},
                                        "synth": {"diameter_rim_mm": 1.0}})
    vox = np.array([8.0, 1000.0])
    d = synthetic.diameter_of_voxels(vox, 2.0)
    np.testing.assert_allclose(synthetic.filter_diameter_mm(vox, config), d - 1.0)
    for bad in (-0.5, float("nan")):
        config.synth.diameter_rim_mm = bad
        with pytest.raises(ConfigError, match="config.synth.diameter_rim_mm"):
            synthetic.filter_diameter_mm(vox, config)
