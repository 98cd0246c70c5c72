"""Fixtures of the tests on prepared scans (test_prepare.py, test_patchsets.py): a tiny
generated phantom (4 scans, ~0.3 M voxels each) prepared at 1.5 mm. Module-scoped: under
``--dist loadfile`` each module that uses them builds them once on its worker."""

import pytest

from nodulejax.data import luna16, prepare
from nodulejax.data.phantom.generate import generate_dataset

SPACING = 1.5
WINDOW = (-1000.0, 400.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("phantom"))
    generate_dataset(out, num_scans=4, seed=3, size_scale=0.3, num_subsets=4,
                     max_voxels=300_000)
    return out


@pytest.fixture(scope="module")
def dataset(root):
    return luna16.Luna16Dataset(root)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def scans(dataset, cache_dir):
    return prepare.prepare_folds(dataset, [0, 1, 2, 3], spacing=SPACING, window=WINDOW,
                                 cache_dir=cache_dir)
