"""Cube anchors, 3D IoU, box coding, anchor matching, NMS and heatmap peaks
(nodulejax.models.boxes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nodulejax.models import boxes as bx


def test_iou_identical_disjoint_and_partial():
    a = jnp.array([[10.0, 10.0, 10.0, 4.0]])
    assert float(bx.box_iou(a, a)[0, 0]) == pytest.approx(1.0)
    far = jnp.array([[10.0, 10.0, 20.0, 4.0]])
    assert float(bx.box_iou(a, far)[0, 0]) == 0.0
    touching = jnp.array([[10.0, 10.0, 14.0, 4.0]])  # shares a face only
    assert float(bx.box_iou(a, touching)[0, 0]) == 0.0
    # shifted by 2 along x: overlap 4*4*2 = 32, union 64 + 64 - 32 = 96
    half = jnp.array([[10.0, 10.0, 12.0, 4.0]])
    assert float(bx.box_iou(a, half)[0, 0]) == pytest.approx(32 / 96)
    # a 2-cube inside a 4-cube: 8 / 64
    inner = jnp.array([[10.5, 9.5, 10.0, 2.0]])
    assert float(bx.box_iou(a, inner)[0, 0]) == pytest.approx(8 / 64)
    # shifted on all three axes by 1: overlap 3^3 = 27, union 128 - 27
    diag = jnp.array([[11.0, 11.0, 11.0, 4.0]])
    assert float(bx.box_iou(a, diag)[0, 0]) == pytest.approx(27 / 101)
    iou = bx.box_iou(jnp.concatenate([a, far]), jnp.concatenate([a, half, inner]))
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(bx.box_iou(jnp.concatenate([a, half, inner]),
                                          jnp.concatenate([a, far])), iou.T)  # symmetric


def test_encode_decode_roundtrip():
    rng = np.random.default_rng(0)
    anchors = np.concatenate([rng.uniform(0, 64, (50, 3)), rng.uniform(4, 30, (50, 1))], 1)
    deltas = rng.normal(0, 0.5, (50, 4)).astype(np.float32)
    back = bx.encode_boxes(bx.decode_boxes(deltas, anchors), anchors)
    np.testing.assert_allclose(back, deltas, atol=1e-4)
    boxes = np.concatenate([rng.uniform(0, 64, (50, 3)), rng.uniform(3, 30, (50, 1))], 1)
    np.testing.assert_allclose(bx.decode_boxes(bx.encode_boxes(boxes, anchors), anchors), boxes,
                               rtol=1e-4, atol=1e-3)
    # an anchor's own box encodes to zero
    np.testing.assert_allclose(bx.encode_boxes(anchors, anchors), 0.0, atol=1e-6)


def test_make_anchors_layout():
    a = bx.make_anchors((2, 3, 4), stride=2, sizes_vox=[4.0, 8.0])
    assert a.shape == (2 * 3 * 4 * 2, 4)
    a = np.asarray(a).reshape(2, 3, 4, 2, 4)
    np.testing.assert_allclose(a[1, 2, 3, 1], [2.5, 4.5, 6.5, 8.0])  # j*s + (s-1)/2
    np.testing.assert_allclose(a[0, 0, 0, 0], [0.5, 0.5, 0.5, 4.0])
    np.testing.assert_allclose(bx.anchor_sizes_vox((5.0, 10.0), 0.625), [8.0, 16.0])


def test_match_assigns_each_gt_its_best_anchor():
    anchors = bx.make_anchors((4, 4, 4), 4, [8.0, 16.0])
    # a tiny GT overlapping every anchor by < pos_iou; a large GT equal to one anchor
    gts = jnp.array([[5.0, 6.0, 7.0, 3.0], [9.5, 9.5, 9.5, 16.0], [0.0, 0.0, 0.0, 1.0]])
    valid = jnp.array([True, True, False])
    labels, matched = bx.match_anchors(anchors, gts, valid, pos_iou=0.5, neg_iou=0.2)
    iou = np.asarray(bx.box_iou(anchors, gts))
    for g in (0, 1):
        best = int(np.argmax(iou[:, g]))
        assert int(labels[best]) == 1 and int(matched[best]) == g
    assert iou[:, 0].max() < 0.5  # the first GT is only positive thanks to the best-anchor rule
    # rule-based labels elsewhere; the invalid GT matches nothing
    best_valid = iou[:, :2].max(1)
    labels = np.asarray(labels)
    assert np.all(labels[best_valid >= 0.5] == 1)
    forced = np.any(iou[:, :2] == iou[:, :2].max(0), axis=1)  # best anchors, ties included
    assert np.all(labels[(best_valid < 0.2) & ~forced] == 0)
    assert np.all(labels[(best_valid >= 0.2) & (best_valid < 0.5) & ~forced] == -1)
    assert not np.any(np.asarray(matched)[labels == 1] == 2)
    # no valid GT: everything negative
    labels0, _ = bx.match_anchors(anchors, gts, jnp.zeros(3, bool))
    assert np.all(np.asarray(labels0) == 0)


def test_nms_boxes_keeps_best_of_overlap_and_both_far():
    boxes = jnp.array([[10.0, 10, 10, 6], [10.0, 10, 11, 6], [40.0, 40, 40, 6],
                       [70.0, 10, 10, 6]])
    scores = jnp.array([0.6, 0.9, 0.5, 0.1])
    idx, sc, valid = bx.nms_boxes(boxes, scores, iou_threshold=0.3, max_output=10)
    assert idx.shape == (10,)
    kept = [int(i) for i, v in zip(idx, valid, strict=True) if v]
    assert kept == [1, 2, 3]  # 0 is suppressed by the higher-scoring 1; far boxes stay
    assert np.all(np.asarray(idx)[~np.asarray(valid)] == -1)
    idx2, _, valid2 = bx.nms_boxes(boxes, scores, 0.3, max_output=2)
    assert idx2.shape == (2,) and [int(i) for i in idx2] == [1, 2] and bool(valid2.all())
    # jittable with static sizes
    f = jax.jit(lambda b, s: bx.nms_boxes(b, s, 0.3, 3, pre_nms_top_n=4))
    assert [int(i) for i in f(boxes, scores)[0]] == [1, 2, 3]


def test_nms_points_by_distance():
    pts = jnp.array([[0.0, 0, 0], [0.0, 0, 3], [0.0, 0, 20]])
    idx, _, valid = bx.nms_points(pts, jnp.array([0.5, 0.8, 0.3]), radius=5.0, max_output=5)
    assert [int(i) for i, v in zip(idx, valid, strict=True) if v] == [1, 2]
    idx, _, valid = bx.nms_points(pts, jnp.array([0.5, 0.8, 0.3]), radius=2.0, max_output=5)
    assert [int(i) for i, v in zip(idx, valid, strict=True) if v] == [1, 0, 2]


def test_heatmap_peaks_finds_blobs_and_suppresses_in_mm():
    from nodulejax.losses.detection import heatmap_target

    centres = np.array([[4, 5, 6], [12, 10, 3], [12, 10, 6]])
    heights = (1.0, 0.8, 0.6)
    h = jnp.max(jnp.stack([hgt * heatmap_target((16, 16, 16), c[None], 1.0)
                           for hgt, c in zip(heights, centres, strict=True)]), axis=0)
    zyx, scores, valid = bx.heatmap_peaks(h, k=5, spacing_mm=1.0, radius_mm=2.0)
    found = {tuple(int(t) for t in p) for p, v in zip(zyx, valid, strict=True) if v}
    assert {tuple(c) for c in centres} <= found
    assert len(found) == int(valid.sum()) <= 5
    # with 2 mm voxels the two centres 3 voxels apart are 6 mm apart: suppressed at 8 mm
    zyx, _, valid = bx.heatmap_peaks(h, k=5, spacing_mm=2.0, radius_mm=8.0)
    assert int(valid.sum()) == 2
    kept = {tuple(int(t) for t in p) for p, v in zip(zyx, valid, strict=True) if v}
    assert kept == {(4, 5, 6), (12, 10, 3)}
    zyx, _, valid = bx.heatmap_peaks(h, k=1, spacing_mm=1.0, radius_mm=2.0)
    assert zyx.shape == (1, 3) and bool(valid[0])
