"""TFDS builders (array_record, no TensorFlow) vs the numpy path, on a tiny phantom."""

import os
import sys

import numpy as np
import pytest

from nodulejax.data import tfds_builders as tb
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.errors import ConfigError, LUNA16FormatError

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

P, SPACING = 12, 2.0
TINY = dict(phantom_num_scans=3, phantom_seed=5, phantom_size_scale=0.3,
            phantom_max_voxels=200_000, phantom_num_subsets=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("luna_manual"))
    generate_dataset(out, num_scans=3, seed=5, size_scale=0.3, num_subsets=3,
                     max_voxels=200_000)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _assert_same(a, b):
    assert a.keys() == b.keys() == set(tb.FEATURE_KEYS)
    for k in a:
        assert a[k].shape == b[k].shape, k
        if a[k].dtype == object:
            assert list(a[k]) == list(b[k])
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_luna16_manual_subset_splits_match_numpy_path(root, data_dir):
    spec = tb.PatchesSpec(patch_size=P, spacing=SPACING, splits="subsets", max_neg_per_scan=6)
    b = tb.build("luna16", data_dir, spec, manual_dir=root)
    assert set(b.info.splits.keys()) == {"fold0", "fold1", "fold2"}
    for k in range(3):
        got = tb.split_arrays(b, f"fold{k}")
        ref = tb.fpr_split_arrays(root, [k], patch_size=P, spacing=SPACING, max_neg_per_scan=6)
        _assert_same(got, ref)
        assert got["patch"].dtype == np.float32 and got["patch"].shape[1:] == (P, P, P)
        assert set(got["fold"]) == {k}
        assert set(got["label"]) == {0, 1} or got["label"].sum() == 0
    # no TensorFlow was needed to build or read
    assert "tensorflow" not in sys.modules
    # a second build reuses the prepared files (same folder, no regeneration)
    b2 = tb.build("luna16", data_dir, spec, manual_dir=root)
    assert os.fspath(b2.data_dir) == os.fspath(b.data_dir)


def test_centres_are_world_coordinates_of_annotations(root):
    a = tb.fpr_split_arrays(root, [0, 1, 2], patch_size=P, spacing=SPACING)
    from nodulejax.data import luna16

    ann = luna16.Luna16Dataset(root).annotations
    pos = a["center_xyz"][a["label"] == 1]
    assert len(pos) == len(ann)
    for xyz, uid in zip(pos, a["seriesuid"][a["label"] == 1], strict=True):
        d = np.linalg.norm(ann.for_uid(uid).xyz - xyz, axis=1)
        assert d.min() < 1e-3  # a positive's centre is an annotated nodule (float32 mm)
    # positives are brighter at the centre than negatives on average
    c = a["patch"][:, P // 2, P // 2, P // 2]
    assert c[a["label"] == 1].mean() > c[a["label"] == 0].mean()


def test_phantom_builder_roles_quantized(data_dir):
    spec = tb.PatchesSpec(patch_size=P, spacing=SPACING, quantize=True, max_neg_per_scan=6,
                          train_folds=(0, 1), val_folds=(2,), test_folds=(), **TINY)
    b = tb.build("phantom", data_dir, spec)
    assert set(b.info.splits.keys()) == {"train", "validation"}
    tr, va = tb.split_arrays(b, "train"), tb.split_arrays(b, "validation")
    assert tr["patch"].dtype == np.uint8
    assert set(tr["fold"]) == {0, 1} and set(va["fold"]) == {2}
    assert not set(tr["seriesuid"]) & set(va["seriesuid"])
    # the generated phantom sits in the build folder and is the same dataset as a direct one
    gen = [d for d in os.listdir(os.path.join(data_dir, "downloads")) if d.startswith("phantom")]
    assert len(gen) == 1
    gen_root = os.path.join(data_dir, "downloads", gen[0])
    ref = tb.fpr_split_arrays(gen_root, [2], patch_size=P, spacing=SPACING, max_neg_per_scan=6)
    np.testing.assert_allclose(tb.dequantize(va["patch"]), ref["patch"], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(va["label"], ref["label"])


def test_quantize_round_trip():
    x = np.linspace(-0.1, 1.1, 1000, dtype=np.float32)
    q = tb.quantize(x)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    np.testing.assert_allclose(tb.dequantize(q), np.clip(x, 0, 1), atol=0.5 / 255 + 1e-6)


def test_errors(root, tmp_path):
    with pytest.raises(ConfigError, match="splits"):
        tb.PatchesSpec(splits="random")
    spec = tb.PatchesSpec(patch_size=P, spacing=SPACING, train_folds=(0,), val_folds=(7,),
                          test_folds=())
    with pytest.raises(ConfigError, match="validation"):  # fold 7 has no scans here
        tb.build("luna16", str(tmp_path / "a"), spec, manual_dir=root)
    empty = tmp_path / "empty_manual"
    empty.mkdir()
    with pytest.raises(LUNA16FormatError, match="annotations.csv"):
        tb.build("luna16", str(tmp_path / "b"), spec, manual_dir=str(empty))
    with pytest.raises(ConfigError, match="manual"):
        tb.build("luna16", str(tmp_path / "c"), spec)
    with pytest.raises(ConfigError, match="kind"):
        tb.build("kaggle", str(tmp_path / "d"), spec)


def test_spec_from_config():
    from configs import default

    c = default.get_config()
    s = tb.spec_from_config(c, quantize=True)
    assert s.patch_size == c.fpr.patch_size and s.spacing == c.data.spacing
    assert s.val_folds == tuple(c.data.val_folds) and s.quantize
    assert s.tag() != tb.spec_from_config(c).tag()  # different settings -> different folder
