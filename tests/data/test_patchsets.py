"""patchsets.py (FPR, segmentation, synthesizer and CG training sets) on the prepared tiny
phantom of ``tests/data/conftest.py``."""

import numpy as np

from nodulejax.data.patchsets import cg_crop_batch, fpr_patches, nodule_cutouts, seg_patches
from nodulejax.losses.detection import heatmap_target
from tests.data.conftest import SPACING


def test_fpr_patches_positives_brighter(scans):
    p = fpr_patches(scans, 16, neg_radius_mm=10.0)
    x, y = p["x"], p["y"]
    assert x.shape[1:] == (16, 16, 16) and len(x) == len(y) == len(p["scan"])
    assert (y == 1).sum() == sum(len(s.nodules_zyx) for s in scans)
    assert (y == 0).sum() > (y == 1).sum()
    centre = x[:, 8, 8, 8].astype(np.float32)
    assert centre[y == 1].mean() > centre[y == 0].mean() + 0.1
    # negatives are farther than 10 mm from every finding
    for k in np.flatnonzero(y == 0):
        s = scans[p["scan"][k]]
        f = np.concatenate([s.nodules_zyx, s.excluded_zyx.reshape(-1, 3)])
        assert np.min(np.linalg.norm((f - p["zyx"][k]) * s.spacing, axis=1)) > 10.0
    # max_neg_per_scan bounds negatives per scan
    q = fpr_patches(scans, 16, max_neg_per_scan=3, seed=1)
    for i in range(len(scans)):
        assert ((q["scan"] == i) & (q["y"] == 0)).sum() <= 3


def test_seg_patches_masks_cover_nodule_centres(scans):
    p = seg_patches(scans, 16, negatives_per_scan=1, seed=0)
    npos = sum(len(s.nodules_zyx) for s in scans)
    assert len(p["x"]) == npos + len(scans)
    assert p["mask"][:, 8, 8, 8].sum() >= npos  # every nodule patch has its centre masked


def test_nodule_cutouts_zero_far_from_nodule(scans):
    blur = 2.0
    c = nodule_cutouts(scans, 24, blur_mm=blur)
    assert len(c["x"]) == sum(len(s.nodules_zyx) for s in scans)
    grid = np.stack(np.meshgrid(*[np.arange(24)] * 3, indexing="ij"), -1)
    # patch centre voxel for an integer-rounded centre is index 12
    dist_mm = np.linalg.norm(grid - 12, axis=-1) * SPACING
    for x, d in zip(c["x"], c["diameter_mm"], strict=True):
        assert x[12, 12, 12] > 0.1  # the nodule itself is kept
        far = dist_mm > d + blur + 2 * SPACING  # well beyond radius + blur (masks not spheres)
        assert far.any()
        assert np.all(x[far] == 0.0)
        assert 0.0 <= x.min() and x.max() <= 1.0


def test_cg_crop_heatmap_peaks_at_nodules(scans):
    rng = np.random.default_rng(0)
    size, sigma = 24, 2.0
    b = cg_crop_batch(scans, size, 8, rng, pos_frac=1.0)
    assert b["image"].shape == (8, size, size, size)
    assert b["boxes"].shape[:2] == b["valid"].shape and b["boxes"].shape[2] == 4
    seen = 0
    for img, boxes, valid in zip(b["image"], b["boxes"], b["valid"], strict=True):
        assert valid.any()  # pos_frac=1: jitter of a quarter crop keeps the nodule inside
        hm = np.asarray(heatmap_target((size,) * 3, boxes[:, :3], sigma, valid=valid))
        assert 0.0 <= hm.min() and hm.max() <= 1.0 + 1e-6
        for z, y, x, d in boxes[valid]:
            assert 0 <= z < size and 0 <= y < size and 0 <= x < size and d > 0
            r = tuple(np.round([z, y, x]).astype(int))
            if not all(0 <= v < size for v in r):
                continue
            assert hm[r] > 0.99  # the blob peaks (= 1) at the nodule centre
            assert img[r] > 0.25  # a nodule there: brighter than aerated lung (~0.1)
            seen += 1
        assert np.isclose(hm.max(), 1.0, atol=1e-3)
    assert seen >= 8
    # random lung crops: the target is empty exactly when no nodule is inside the crop
    neg = cg_crop_batch(scans, size, 4, np.random.default_rng(1), pos_frac=0.0)
    for boxes, valid in zip(neg["boxes"], neg["valid"], strict=True):
        hm = np.asarray(heatmap_target((size,) * 3, boxes[:, :3], sigma, valid=valid))
        assert (hm.max() > 0.5) == bool(valid.any())
