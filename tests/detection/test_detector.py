"""Whole-scan detection: sliding-window blending, heatmap peaks + NMS, union of blob and RPN
candidates, candidate sensitivity, submission CSV in world mm."""


import numpy as np
import pytest
from scipy import ndimage

from nodulejax.detection import detector as dt
from tests.detection.helpers import flipped_scan


# ----------------------------------------------------------------------------- blending
@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_sliding_window_equals_full_pass_for_pointwise_net(blend):
    rng = np.random.default_rng(0)
    vol = rng.random((21, 13, 30)).astype(np.float32)
    fn = lambda x: np.concatenate([x ** 2, np.sin(3 * x)], -1)  # noqa: E731
    out = dt.sliding_window(fn, vol, 8, 0.25, blend=blend, batch_size=3, channels=2)
    assert out.shape == vol.shape + (2,)
    np.testing.assert_allclose(out[..., 0], vol ** 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], np.sin(3 * vol), rtol=1e-5, atol=1e-6)


def test_sliding_window_with_receptive_field_matches_full_pass():
    """A 3^3 box filter (receptive field 1 voxel < overlap): Gaussian blending gives the
    full-volume result up to the tiny weight of window borders."""
    rng = np.random.default_rng(1)
    vol = rng.random((24, 20, 28)).astype(np.float32)

    def box(x):  # (B, W, W, W, 1), zero padding like a SAME conv
        return np.stack([ndimage.uniform_filter(v[..., 0], 3, mode="constant")[..., None]
                         for v in x])

    full = ndimage.uniform_filter(vol, 3, mode="constant")
    out = dt.sliding_window(box, vol, 12, 0.5, blend="gaussian", batch_size=4)[..., 0]
    np.testing.assert_allclose(out, full, atol=2e-3)
    lin = dt.sliding_window(box, vol, 12, 0.5, blend="linear", batch_size=4)[..., 0]
    assert np.abs(lin - full).max() > np.abs(out - full).max()  # borders matter more


def _padded_blend(fn, vol, win, overlap, roi, batch_size, channels):
    """Reference: one accumulator over the whole padded volume (the streaming version must
    give the same bits)."""
    starts, padded = dt.window_grid(vol.shape, win, overlap)
    pv = np.zeros(padded, np.float32)
    pv[: vol.shape[0], : vol.shape[1], : vol.shape[2]] = vol
    proi = np.zeros(padded, bool)
    proi[: vol.shape[0], : vol.shape[1], : vol.shape[2]] = roi
    acc, wsum = np.zeros(padded + (channels,), np.float32), np.zeros(padded, np.float32)
    w = dt.blend_weights(win)
    corners = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]
               if proi[z: z + win, y: y + win, x: x + win].any()]
    for b0 in range(0, len(corners), batch_size):
        chunk = corners[b0: b0 + batch_size]
        xb = np.zeros((batch_size, win, win, win, 1), np.float32)
        for j, (z, y, x) in enumerate(chunk):
            xb[j, ..., 0] = pv[z: z + win, y: y + win, x: x + win]
        dense = fn(xb)
        for j, (z, y, x) in enumerate(chunk):
            acc[z: z + win, y: y + win, x: x + win] += w[..., None] * dense[j]
            wsum[z: z + win, y: y + win, x: x + win] += w
    out = acc / np.maximum(wsum, 1e-12)[..., None]
    return out[: vol.shape[0], : vol.shape[1], : vol.shape[2]]


def test_streamed_blend_reads_a_lazy_volume_and_matches_one_padded_accumulator(tmp_path):
    """The slab-by-slab blend over a lazy (on-disk, float16) scan volume gives the bits of one
    padded accumulator over the in-memory volume, with z-rows of windows skipped (ROI gaps
    deeper than a window) and a ragged last row."""
    from nodulejax.data.scanstore import DiskImage

    rng = np.random.default_rng(3)
    vol = rng.random((61, 19, 27)).astype(np.float16).astype(np.float32)
    np.save(tmp_path / "image.npy", vol.astype(np.float16))
    lazy = DiskImage(str(tmp_path / "image.npy"))
    roi = np.zeros(vol.shape, bool)
    roi[1:4, 3:6, 2:20] = True
    roi[40:42, 10, 5] = True  # rows between hold no ROI voxel: their windows are skipped
    roi[60, 18, 26] = True
    fn = lambda x: np.concatenate([np.sin(3 * x), x ** 2 + 0.1], -1)  # noqa: E731
    ref = _padded_blend(fn, vol, 8, 0.25, roi, 3, 2)
    out = dt.sliding_window(fn, lazy, 8, 0.25, batch_size=3, channels=2, roi=roi)
    assert out.shape == vol.shape + (2,) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    assert (out[20:30] == 0).all() and (out[2, 4, 5] > 0).all()  # skipped rows predict 0


def test_window_grid_covers_volume():
    starts, padded = dt.window_grid((17, 8, 33), 8, 0.25)
    for n, s, p in zip((17, 8, 33), starts, padded, strict=False):
        assert s[0] == 0 and s[-1] + 8 == p >= n and np.all(np.diff(s) == 6)


# ----------------------------------------------------------------------------- peaks / union
def test_heatmap_peaks_find_planted_blobs_and_nms_keeps_k():
    shape = (30, 30, 30)
    centres = np.array([[5, 6, 7], [20, 22, 9], [15, 15, 25]])
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    h = np.zeros(shape, np.float32)
    for i, c in enumerate(centres):
        h = np.maximum(h, (0.9 - 0.1 * i) * np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2
                                                      + (xx - c[2]) ** 2) / 8.0))
    zyx, scores = dt.heatmap_candidates(h, 5, 1.0, 5.0)
    assert len(zyx) <= 5 and np.all(np.diff(scores) <= 0)
    np.testing.assert_array_equal(zyx[:3], centres)
    noisy = np.random.default_rng(0).random(shape).astype(np.float32)
    zyx, scores = dt.heatmap_candidates(noisy, 7, 2.0, 6.0)
    assert len(zyx) == 7
    d = np.linalg.norm((zyx[:, None] - zyx[None]) * 2.0, axis=-1) + 1e9 * np.eye(7)
    assert d.min() >= 6.0


def test_union_merges_duplicates_by_distance():
    blob = np.array([[10.0, 10, 10], [30, 30, 30]])
    rpn = np.array([[11.0, 10, 10], [50, 50, 50], [50.5, 50, 50]])
    zyx, scores, src = dt.merge_candidates(blob, [0.5, 0.4], rpn, [0.9, 0.3, 0.2], 3.0)
    assert len(zyx) == 3
    np.testing.assert_array_equal(src, [3, 1, 2])
    np.testing.assert_allclose(scores, [0.9, 0.4, 0.3])
    np.testing.assert_allclose(zyx[0], blob[0])


def test_union_capped_at_num_candidates():
    rng = np.random.default_rng(0)
    blob = rng.uniform(0, 100, (8, 3)).round()
    rpn = rng.uniform(200, 300, (5, 3)).round()  # far from every blob: all added
    merged = dt.merge_candidates(blob, rng.uniform(0, 1, 8), rpn, rng.uniform(0, 1, 5), 3.0)
    assert len(merged[0]) == 13
    for k in (1, 5, 13, 20):
        zyx, sc, src = dt.cap_candidates(*merged, k)
        assert len(zyx) == min(k, 13)
        np.testing.assert_array_equal(sc, np.sort(merged[1])[::-1][:k])  # highest kept
        for z, s_ in zip(zyx, sc, strict=True):  # rows stay together
            i = int(np.flatnonzero((merged[0] == z).all(1))[0])
            assert merged[1][i] == s_
    assert len(dt.cap_candidates(*merged, 0)[0]) == 13  # 0 keeps all


def test_candidate_sensitivity_min_diameter():
    scan = flipped_scan()  # one 6 mm nodule at (5, 6, 7)
    near = np.array([[5.0, 6.0, 8.0]])
    src = np.array([1], np.int8)
    assert dt.candidate_sensitivity([scan], {scan.uid: (near, np.ones(1), src)},
                                    6.0)["n_nodules"] == 1
    info = dt.candidate_sensitivity([scan], {scan.uid: (near, np.ones(1), src)}, 6.5)
    assert info["n_nodules"] == 0 and np.isnan(info["sensitivity"])


# ----------------------------------------------------------------------------- geometry / CSV
def test_candidate_sensitivity_luna16_radius():
    scan = flipped_scan()  # nodule at (5, 6, 7), d = 6 mm -> radius 3 mm = 1.5 voxels
    near = np.array([[5.0, 6.0, 8.0]])  # 2 mm away: hit
    far = np.array([[5.0, 6.0, 9.0]])  # 4 mm away: miss
    src = np.array([2], np.int8)
    info = dt.candidate_sensitivity([scan], {scan.uid: (near, np.ones(1), src)})
    assert info["sensitivity"] == 1.0 and info["sensitivity_rpn"] == 1.0
    assert info["sensitivity_blob"] == 0.0
    info = dt.candidate_sensitivity([scan], {scan.uid: (far, np.ones(1), src)})
    assert info["sensitivity"] == 0.0 and info["n_nodules"] == 1


def test_rpn_centres_outside_the_lung_roi_are_dropped():
    # the blob heatmap is masked by the ROI; RPN boxes must be too, else a window touching
    # the ROI proposes boxes at the volume's border (evidence run: 23 of baseline-ce's top 24
    # false positives, ~30 mm outside the lung, patches ~40% zero padding)
    roi = np.zeros((8, 8, 8), bool)
    roi[2:6, 2:6, 2:6] = True
    zyx = np.array([[3.0, 3, 3],      # inside
                    [5.4, 5.4, 5.4],  # rounds to voxel 5: inside
                    [5.6, 3, 3],      # rounds to 6: outside the ROI
                    [0.0, 0, 0],      # in the volume, outside the ROI
                    [-0.6, 3, 3],     # outside the volume
                    [3.0, 3, 7.6]])   # outside the volume
    assert dt.in_roi(zyx, roi.shape, roi).tolist() == [True, True, False, False, False, False]
    assert dt.in_roi(zyx, roi.shape).tolist() == [True, True, True, True, False, False]
    assert dt.in_roi(np.zeros((0, 3)), roi.shape, roi).shape == (0,)


def test_score_batch_size_defaults_and_refuses_bad_values():
    """Detection's FPR batch: ``c.fpr.infer_batch_size``; 0 or absent (a model exported before
    the field) -> ``c.fpr.batch_size``; a negative or non-int value is refused by name."""
    import ml_collections

    from nodulejax.errors import ConfigError

    c = ml_collections.ConfigDict({"fpr": {"batch_size": 16}})
    assert dt.score_batch_size(c) == 16  # absent
    c.fpr.infer_batch_size = 0
    assert dt.score_batch_size(c) == 16
    c.fpr.infer_batch_size = 4
    assert dt.score_batch_size(c) == 4
    for bad in (-1, 2.5):
        c = ml_collections.ConfigDict({"fpr": {"batch_size": 16, "infer_batch_size": bad}})
        with pytest.raises(ConfigError, match="config.fpr.infer_batch_size"):
            dt.score_batch_size(c)
