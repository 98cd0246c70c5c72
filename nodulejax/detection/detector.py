"""Whole-scan detection (paper Sections 3.1 and 5.2): sliding-window CG, candidates, FPR scores.

Pipeline for one :class:`~nodulejax.data.prepare.PreparedScan` (image in [0, 1] at the
working spacing, arrays ``(z, y, x)``):

1. Sliding-window inference of the three CG networks (``cg``, ``cg_ggo``, ``rpn``) over the
   whole volume: windows of side ``W = c.cg.window_size or c.cg.input_size`` at stride
   ``W - round(W * c.cg.window_overlap)``; the volume is zero-padded (air) at its far ends to
   a whole number of strides, so every window has the same shape and the network is jitted
   once per window shape. Window predictions are blended with weights ``w`` (Gaussian,
   sigma = W/8, or linear tent; ``c.cg.blend``): ``out = sum_w w p / sum_w w``.
2. Fused heatmap = element-wise maximum of the all-nodule and GGO networks' sigmoid heatmaps
   (Section 3.1); local maxima -> top ``4 K`` -> greedy 3D NMS at ``c.cg.nms_radius_mm`` ->
   up to ``K = c.cg.num_candidates`` blob candidates.
3. RPN boxes decoded per window (``rpn_proposals``), shifted to volume voxels, NMS by IoU
   (``c.cg.rpn_iou``) over all windows -> up to ``c.cg.rpn_candidates`` boxes. Union with
   the blob candidates: an RPN centre closer than ``c.cg.nms_radius_mm`` to a blob candidate
   is a duplicate and merged into it (source flag 3, score the maximum); others are added.
   Each NMS sees the ``c.cg.rpn_pre_nms`` top-scoring boxes. The union is capped at the
   ``K = c.cg.num_candidates`` highest scores (:func:`cap_candidates`; Section 5.2 feeds
   the FPR 100 candidates per scan).
4. Each candidate's ``c.fpr.patch_size`` patch is scored by the FPR network
   (``nodulejax.models.heads.fpr_prob``); the scores go into a LUNA16 submission CSV in world mm.

Source flags: 1 = blob heatmap, 2 = RPN, 3 = both. The CLI lives in
``nodulejax.detection.run`` (``python -m nodulejax.detection ...``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from nodulejax.data.luna16 import hit_matrix, hit_radius_sq
from nodulejax.data.patches import extract_patches
from nodulejax.errors import ConfigError
from nodulejax.models import boxes as bx
from nodulejax.models.build import cg_model, fpr_model, fpr_prob_fn, rpn_model
from nodulejax.models.rpn import anchors_for, rpn_proposals
from nodulejax.runtime.batching import pad_rows

SOURCE_BLOB, SOURCE_RPN = 1, 2


# ----------------------------------------------------------------------------- windows
def window_size(config) -> int:
    return int(config.cg.window_size or config.cg.input_size)


def window_grid(shape, win: int, overlap: float):
    """Window starts per axis and the padded shape.

    Returns (starts: list of 3 int arrays, padded (3,) ints): stride
    ``s = max(1, W - round(W * overlap))``, padded side ``max(W, ceil((n - W) / s) * s + W)``.
    """
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"config.cg.window_overlap={overlap}: must be in [0, 1)")
    stride = max(1, win - int(round(win * overlap)))
    starts, padded = [], []
    for n in shape:
        m = max(0, math.ceil((int(n) - win) / stride))
        starts.append(np.arange(m + 1) * stride)
        padded.append(m * stride + win)
    return starts, tuple(padded)


def blend_weights(win: int, kind: str = "gaussian") -> np.ndarray:
    """(W, W, W) float32 positive blending weights, largest at the window centre.

    "gaussian": exp(-(i - c)^2 / (2 (W/8)^2)) per axis (nnU-Net style; edges ~3e-4 of the
    centre, so the window borders, where zero padding corrupts the prediction, barely count);
    "linear": tent min(i + 1, W - i) per axis. Product over the three axes.
    """
    i = np.arange(win, dtype=np.float64)
    if kind == "gaussian":
        c, s = (win - 1) / 2.0, win / 8.0
        w1 = np.exp(-((i - c) ** 2) / (2 * s * s))
    elif kind == "linear":
        w1 = np.minimum(i + 1, win - i)
    else:
        raise ConfigError(f"config.cg.blend={kind!r}: expected 'gaussian' or 'linear'")
    w1 = np.maximum(w1 / w1.max(), 1e-6)
    return (w1[:, None, None] * w1[None, :, None] * w1[None, None, :]).astype(np.float32)


def sliding_window(apply_fn, volume, win: int, overlap: float, *, blend: str = "gaussian",
                   batch_size: int = 2, channels: int = 1, proposals_fn=None, roi=None,
                   progress: bool = False):
    """Blend ``apply_fn`` over a whole volume.

    Args:
      apply_fn: jitted ``x (B, W, W, W, 1) -> dense (B, W, W, W, channels)`` or, with
        proposals_fn, ``-> (dense, aux)``; called with a fixed batch size ``batch_size``
        (the last batch is padded), so it compiles once per window shape.
      volume: (Z, Y, X) in [0, 1]: an array or a lazy scan volume (read by window).
      proposals_fn: optional host callback ``(aux_row, start_zyx)`` per window (RPN decoding).
      roi: optional (Z, Y, X) bool region of interest (the dilated lung mask): windows holding
        no ROI voxel are skipped and their voxels predict 0 (a CAD system only reads the lungs;
        this skips the ~half of a chest CT outside them).
      progress: a tqdm bar over the window batches.
    Returns:
      (Z, Y, X, channels) float32 blended predictions (cropped to the volume).
    """
    shape = tuple(int(n) for n in volume.shape)
    starts, padded = window_grid(shape, win, overlap)
    w = blend_weights(win, blend)
    out = np.zeros(shape + (channels,), np.float32)
    corners = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    if roi is not None:  # voxels past the volume hold no ROI (the zero padding)
        corners = [(z, y, x) for z, y, x in corners
                   if roi[z: z + win, y: y + win, x: x + win].any()]
    # Windows run in z-rows; a rolling slab (win voxels deep) accumulates the rows that can
    # still touch it, and the planes no later row reaches are normalised into ``out``. Same
    # sums in the same order as one padded accumulator, so the same bits; memory is ``out``
    # plus a slab, and ``volume`` is read window by window (a lazy scan reads only that block).
    acc = np.zeros((win, padded[1], padded[2], channels), np.float32)
    wsum = np.zeros((win, padded[1], padded[2]), np.float32)
    lo = 0  # the z of acc[0]

    def flush(upto: int) -> None:  # planes [lo, upto) are final
        nonlocal lo
        d = min(upto - lo, win)  # planes past the slab hold no window: they stay 0
        if d <= 0:
            return
        z1 = min(lo + d, shape[0])
        if z1 > lo:
            n = z1 - lo
            out[lo:z1] = (acc[:n] / np.maximum(wsum[:n], 1e-12)[..., None])[:, : shape[1],
                                                                           : shape[2]]
        acc[: win - d], wsum[: win - d] = acc[d:], wsum[d:]  # numpy buffers the overlap
        acc[win - d:], wsum[win - d:] = 0.0, 0.0
        lo = upto

    from tqdm.auto import tqdm

    for b0 in tqdm(range(0, len(corners), batch_size), desc="windows", unit="batch",
                   leave=False, disable=not progress, dynamic_ncols=True):
        chunk = corners[b0: b0 + batch_size]
        xb = np.zeros((batch_size, win, win, win, 1), np.float32)
        for j, (z, y, x) in enumerate(chunk):
            block = np.asarray(volume[z: z + win, y: y + win, x: x + win], np.float32)
            xb[j, : block.shape[0], : block.shape[1], : block.shape[2], 0] = block
        out_b = apply_fn(xb)
        dense, aux = out_b if proposals_fn is not None else (out_b, None)
        dense = np.asarray(dense)
        for j, (z, y, x) in enumerate(chunk):
            flush(z)
            acc[z - lo: z - lo + win, y: y + win, x: x + win] += w[..., None] * dense[j]
            wsum[z - lo: z - lo + win, y: y + win, x: x + win] += w
            if proposals_fn is not None:
                proposals_fn(jax.tree.map(lambda a, j=j: np.asarray(a[j]), aux),
                             np.array([z, y, x], np.float32))
    flush(lo + win)
    return out


# ----------------------------------------------------------------------------- CG networks
@functools.lru_cache(maxsize=8)
def _cg_apply(config_key):
    """Window function of the three CG networks, each jitted (cached per model
    configuration): ``apply(params, x (B, W, W, W, 1)) -> (dense (B, W, W, W, 2), proposals
    or None)``."""
    config = _KEYED[config_key]
    blob, rpn = cg_model(config), rpn_model(config)
    win = window_size(config)
    anchors = anchors_for(rpn, (win,) * 3, tuple(config.cg.anchors_mm), float(config.data.spacing))
    k_rpn = int(config.cg.rpn_candidates)
    iou = float(config.cg.rpn_iou)
    pre = int(config.cg.rpn_pre_nms)

    # one jitted program per network, run one after the other: a window batch holds one
    # network's activations at a time (on the CPU, one program of all three held 5.0 GB for
    # two 128^3 windows of configs/default.py's networks; each network alone 2.2 GB)
    heat = jax.jit(lambda p, x: jax.nn.sigmoid(blob.apply({"params": p}, x)[0]))

    @jax.jit
    def proposals(p, x):
        r = rpn.apply({"params": p}, x)
        return jax.vmap(lambda o, d: rpn_proposals(o, d, anchors, k_rpn, iou, pre))(
            r["objectness"], r["deltas"])

    def apply(params, x):
        dense = jnp.concatenate([heat(params["cg"], x), heat(params["cg_ggo"], x)], -1)
        if params.get("rpn") is None:
            return dense, None
        return dense, proposals(params["rpn"], x)

    return apply


_KEYED: dict = {}


def _config_key(config) -> tuple:
    g = config.cg
    key = (int(g.width), int(g.depth), float(g.get("width_growth", 2.0)),
           tuple(g.get("widths", ())), len(g.anchors_mm), tuple(float(a) for a in g.anchors_mm),
           int(g.rpn_width), str(config.runtime.conv_impl), window_size(config),
           float(config.data.spacing), int(g.rpn_candidates), float(g.rpn_iou),
           int(g.rpn_pre_nms))
    _KEYED[key] = config
    return key


@functools.lru_cache(maxsize=8)
def _point_nms(pre_k: int, k: int, radius: float):
    return jax.jit(lambda p, s, v: bx.nms_points(p, s, radius, k, valid=v))


def heatmap_candidates(heatmap, k: int, spacing_mm: float, radius_mm: float, pre_k=None):
    """Blob candidates of a fused heatmap: local maxima (3^3) -> top ``pre_k`` (4 k) ->
    greedy distance NMS in mm -> at most k. Host-side peak search (any volume shape) and a
    fixed-size jitted NMS (compiled once per k). Same rule as ``boxes.heatmap_peaks``.

    Returns zyx (n, 3) int voxel indices and scores (n,), n <= k, by descending score.
    """
    h = np.asarray(heatmap, np.float32)
    pre_k = int(pre_k or 4 * k)
    peaks = h >= ndimage.maximum_filter(h, size=3, mode="constant", cval=-np.inf)
    idx = np.flatnonzero(peaks)
    vals = h.reshape(-1)[idx]
    if len(idx) > pre_k:
        top = np.argpartition(-vals, pre_k - 1)[:pre_k]
        idx, vals = idx[top], vals[top]
    n = len(idx)
    zyx = np.zeros((pre_k, 3), np.float32)
    sc = np.full((pre_k,), -np.inf, np.float32)
    zyx[:n] = np.stack(np.unravel_index(idx, h.shape), -1) if n else zyx[:0]
    sc[:n] = vals
    keep, scores, valid = _point_nms(pre_k, int(k), float(radius_mm))(
        jnp.asarray(zyx * spacing_mm), jnp.asarray(sc), jnp.asarray(np.arange(pre_k) < n))
    keep, scores, valid = np.asarray(keep), np.asarray(scores), np.asarray(valid)
    return zyx[keep[valid]].astype(np.int64), scores[valid]


def merge_candidates(blob_zyx, blob_scores, rpn_zyx, rpn_scores, radius_vox: float):
    """Union of blob and RPN candidates, duplicates merged by distance (Section 3.1).

    An RPN centre closer than ``radius_vox`` to a blob candidate (closest one) merges into it:
    the blob position is kept, the source becomes 3 and the score the maximum. Remaining RPN
    centres closer than the radius to an already-added RPN centre are dropped too.
    Returns zyx (N, 3) float64, scores (N,), source (N,) int8.
    """
    zyx = [np.asarray(b, np.float64).reshape(-1, 3) for b in (blob_zyx,)]
    out_zyx = list(zyx[0])
    scores = list(np.asarray(blob_scores, np.float64).reshape(-1))
    source = [SOURCE_BLOB] * len(out_zyx)
    for c, s in zip(np.asarray(rpn_zyx, np.float64).reshape(-1, 3),
                    np.asarray(rpn_scores, np.float64).reshape(-1), strict=False):
        if out_zyx:
            d = np.linalg.norm(np.asarray(out_zyx) - c, axis=1)
            j = int(np.argmin(d))
            if d[j] < radius_vox:
                source[j] |= SOURCE_RPN
                scores[j] = max(scores[j], s)
                continue
        out_zyx.append(c)
        scores.append(s)
        source.append(SOURCE_RPN)
    return (np.asarray(out_zyx, np.float64).reshape(-1, 3), np.asarray(scores, np.float64),
            np.asarray(source, np.int8))


def in_roi(zyx, shape, roi=None) -> np.ndarray:
    """(N,) bool: voxel centres ``zyx (N, 3)`` that fall inside the volume of ``shape`` and,
    when a ``roi`` mask (``shape``, bool; :func:`lung_roi`) is given, inside it (nearest
    voxel). The RPN's boxes pass this as the blob heatmap is masked: without it a window
    that touches the ROI proposes boxes anywhere in it, e.g. at the volume's border, whose
    zero-padded patches the FPR scores as nodules."""
    zyx = np.asarray(zyx, np.float64).reshape(-1, 3)
    ok = np.all((zyx >= -0.5) & (zyx < np.asarray(shape) - 0.5), axis=1)
    if roi is not None and ok.any():
        iz = np.clip(np.round(zyx[ok]).astype(int), 0, np.asarray(shape) - 1)
        ok[ok] = np.asarray(roi, bool)[tuple(iz.T)]
    return ok


def cg_maps(cg_params, config, image, roi=None, progress: bool = False):
    """Sliding-window CG over a (Z, Y, X) image: returns (heat_all, heat_ggo) sigmoid maps
    (Z, Y, X) and the RPN boxes (n, 4) (z, y, x, d voxels) with scores (n,) after global
    NMS (empty when ``cg_params`` has no "rpn"). ``roi``: see :func:`sliding_window`; RPN
    boxes whose centre lies outside it are dropped (:func:`in_roi`)."""
    apply = _cg_apply(_config_key(config))
    params = {"cg": cg_params["cg"], "cg_ggo": cg_params["cg_ggo"],
              "rpn": cg_params.get("rpn")}
    boxes, scores = [], []

    def collect(props, start):
        b, s, v = props
        boxes.append(b[v] + np.concatenate([start, [0.0]]))
        scores.append(s[v])

    has_rpn = params["rpn"] is not None
    dense = sliding_window(lambda x: apply(params, jnp.asarray(x)), image, window_size(config),
                           float(config.cg.window_overlap), blend=str(config.cg.blend),
                           batch_size=int(config.cg.infer_batch_size), channels=2,
                           proposals_fn=collect if has_rpn else None, roi=roi,
                           progress=progress) if has_rpn else \
        sliding_window(lambda x: apply(params, jnp.asarray(x))[0], image, window_size(config),
                       float(config.cg.window_overlap), blend=str(config.cg.blend),
                       batch_size=int(config.cg.infer_batch_size), channels=2, roi=roi,
                       progress=progress)
    rb = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    rs = np.concatenate(scores) if scores else np.zeros((0,), np.float32)
    keep = in_roi(rb[:, :3], image.shape, roi)  # the blob map is searched there too
    rb, rs = rb[keep], rs[keep]
    if len(rb):
        # padded to a power of two (invalid rows score -inf and come last): the NMS compiles
        # once per size class, not once per scan's box count (compiled programs stay in memory)
        n, size = len(rb), 1 << (len(rb) - 1).bit_length()
        pb, ps = np.zeros((size, 4), np.float32), np.full((size,), -np.inf, np.float32)
        pb[:n], ps[:n] = rb, rs
        k = int(config.cg.rpn_candidates)
        idx, _, valid = bx.nms_boxes(jnp.asarray(pb), jnp.asarray(ps), float(config.cg.rpn_iou),
                                     k, pre_nms_top_n=min(size, int(config.cg.rpn_pre_nms)),
                                     valid=jnp.asarray(np.arange(size) < n))
        idx = np.asarray(idx)[np.asarray(valid)]
        rb, rs = rb[idx], rs[idx]
    return dense[..., 0], dense[..., 1], rb, rs


def lung_roi(scan, margin_mm: float):
    """The lung mask dilated by ``margin_mm`` (juxta-pleural nodules sit on its border), or
    None when the margin is negative (search the whole volume)."""
    if margin_mm < 0 or scan.lung is None:
        return None
    lung = np.asarray(scan.lung, bool)  # a cached scan's mask is read once, whole
    if not lung.any():
        return None
    r = max(int(round(margin_mm / float(scan.spacing))), 0)
    if r == 0:
        return lung
    from scipy import ndimage

    ball = ndimage.generate_binary_structure(3, 1)
    return ndimage.binary_dilation(lung, ball, iterations=r)


def generate_candidates(cg_params, config, scan, progress: bool = False,
                        maps: dict | None = None):
    """Candidates of one scan (Section 3.1): blob peaks of the fused heatmap (<= K) united
    with the RPN boxes.

    Args:
      cg_params: {"cg": params, "cg_ggo": params, "rpn": params or None}.
      scan: PreparedScan (image (Z, Y, X) in [0, 1]).
      maps: a dict to receive the heatmaps ("all", "ggo": (Z, Y, X), "roi": mask or None)
        and the RPN boxes ("rpn_boxes" (n, 4) z, y, x, d voxels; "rpn_scores"), e.g. to tell
        which network found a candidate; the candidates are the same with or without it.
    Returns:
      zyx (N, 3) float64 voxel indices of ``scan.image``, scores (N,) in [0, 1],
      source (N,) int8 flags (1 blob, 2 RPN, 3 both).
    """
    roi = lung_roi(scan, float(config.cg.roi_margin_mm))
    # a cached scan's image is read window by window (memory: the maps, not the volume)
    h_all, h_ggo, rb, rs = cg_maps(cg_params, config, scan.image, roi, progress)
    if maps is not None:
        maps.update(all=h_all, ggo=h_ggo, roi=roi, rpn_boxes=rb, rpn_scores=rs)
    fused = np.maximum(h_all, h_ggo)
    del h_all, h_ggo  # (unless ``maps`` keeps them) the two maps' memory goes before the peaks
    if roi is not None:
        fused[~roi] = 0.0
    sp = float(scan.spacing)
    bz, bs = heatmap_candidates(fused, int(config.cg.num_candidates), sp,
                                float(config.cg.nms_radius_mm))
    return cap_candidates(*merge_candidates(bz, bs, rb[:, :3], rs,
                                            float(config.cg.nms_radius_mm) / sp),
                          int(config.cg.num_candidates))


def cap_candidates(zyx, scores, source, k: int):
    """The ``k`` highest-scoring candidates of the union (Section 5.2: K = 100 candidates per
    scan feed the FPR), by descending score (ties: union order); k <= 0 keeps all."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    if k > 0:
        order = order[:k]
    return zyx[order], scores[order], source[order]


def hits(nodules_zyx, diam_mm, cand_zyx, spacing_mm: float) -> np.ndarray:
    """(G,) bool: nodule g is hit when some candidate is strictly within d/2 of its centre
    (the LUNA16 rule, ``data.luna16.hit_matrix``: squared distance in mm < (d/2)^2;
    d < 0 means 10 mm); voxel zyx on an isotropic grid of ``spacing_mm``."""
    n = np.asarray(nodules_zyx, np.float64).reshape(-1, 3)
    c = np.asarray(cand_zyx, np.float64).reshape(-1, 3)
    if len(n) == 0 or len(c) == 0:
        return np.zeros(len(n), bool)
    return hit_matrix(c * spacing_mm, n * spacing_mm, hit_radius_sq(diam_mm)).any(0)


def candidate_sensitivity(scans, candidates: dict, min_diameter_mm: float = 0.0) -> dict:
    """Candidate-stage sensitivity (Section 5.2) of ``candidates[uid] = (zyx, scores, source)``
    against the included nodules of ``scans`` of at least ``min_diameter_mm`` (Section 4's
    benchmark rule; smaller ones are not counted): overall, blob-only and RPN-only, with the
    mean number of candidates per scan."""
    n_nod = n_hit = n_blob = n_rpn = n_cand = 0
    for s in scans:
        zyx, _, src = candidates[s.uid]
        d = np.ravel(s.nodules_diam_mm)
        keep = d >= float(min_diameter_mm)
        nz, nd = np.reshape(s.nodules_zyx, (-1, 3))[keep], d[keep]
        n_nod += len(nz)
        n_cand += len(zyx)
        n_hit += int(hits(nz, nd, zyx, s.spacing).sum())
        n_blob += int(hits(nz, nd, zyx[(src & SOURCE_BLOB) > 0], s.spacing).sum())
        n_rpn += int(hits(nz, nd, zyx[(src & SOURCE_RPN) > 0], s.spacing).sum())
    div = max(n_nod, 1)
    return {"sensitivity": n_hit / div if n_nod else float("nan"),
            "sensitivity_blob": n_blob / div if n_nod else float("nan"),
            "sensitivity_rpn": n_rpn / div if n_nod else float("nan"),
            "n_nodules": n_nod, "n_hit": n_hit, "n_scans": len(scans),
            "candidates_per_scan": n_cand / max(len(scans), 1)}


# ----------------------------------------------------------------------------- FPR
def score_batch_size(config) -> int:
    """Candidates per FPR forward pass when detection scores them: ``c.fpr.infer_batch_size``
    (0 or absent, as in models exported before it existed: ``c.fpr.batch_size``)."""
    n = config.fpr.get("infer_batch_size", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"config.fpr.infer_batch_size={n!r}: expected an int >= 0 "
                          "(0: config.fpr.batch_size)")
    return int(n or config.fpr.batch_size)


def score_candidates(fpr_params, config, scan, zyx, *, model=None):
    """FPR probability of "nodule" for each candidate: ``c.fpr.patch_size`` patches of
    ``scan.image`` (padded with 0) scored in fixed batches of :func:`score_batch_size`.
    Returns (N,) float64."""
    zyx = np.asarray(zyx, np.float64).reshape(-1, 3)
    if len(zyx) == 0:
        return np.zeros(0)
    model = model or fpr_model(config)
    fn = fpr_prob_fn(model, str(config.fpr.head))
    p, bsz = int(config.fpr.patch_size), score_batch_size(config)
    out = []
    for b0 in range(0, len(zyx), bsz):
        (x,), n = pad_rows((extract_patches(scan.image, zyx[b0: b0 + bsz], p, 0.0),), bsz)
        out.append(np.asarray(fn({"params": fpr_params},
                                 jnp.asarray(x, jnp.float32)[..., None]))[:n])
    return np.concatenate(out).astype(np.float64)


def to_world(scan, zyx) -> np.ndarray:
    """(N, 3) voxel zyx of the scan's working grid -> (N, 3) world LPS mm (x, y, z)."""
    zyx = np.asarray(zyx, np.float64).reshape(-1, 3)
    if len(zyx) == 0:
        return np.zeros((0, 3))
    return np.atleast_2d(scan.geometry.voxel_to_world(zyx))
