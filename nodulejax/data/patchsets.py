"""Training sets cut from prepared scans: FPR patches, segmentation patches, nodule cut-outs,
candidate-generation crops.

All patches are cubes of ``P`` voxels at the working spacing, values in [0, 1], padded with 0
(air) outside the volume; arrays are ``(N, P, P, P)`` (channel axis added by the trainers).

* FPR (paper Section 3.1, 3.3): positives at included nodule centres, negatives at labelled
  candidates (``candidates_V2.csv``, class 0) farther than ``neg_radius_mm`` from any finding,
  included or excluded, so an excluded finding is never taught as a negative. In memory, or
  written once to the run folder and read by row (``WORKDIR/patches/fpr_p<P>_<digest>/``:
  ``x.npy`` the patches, ``y.npy``, ``scan.npy``, ``zyx.npy``, ``manifest.json`` with the
  set's fingerprint; :func:`fpr_patches` with ``root``), so a study's patch sets need no
  host memory of their size.
* Segmentation pretraining (Section 3.1: "DenseUNet pre-trained with nodule segmentation"):
  nodule patches with their binary masks, plus negatives with empty masks.
* Synthesizer (Section 3.2): "We extract the nodules out of the CT context with the manually
  annotated nodule segmentation. The boundary of the nodule segmentation is blurred with a
  distance transform": ``cutout = patch * w`` with ``w = clip(1 - d / blur_mm, 0, 1)``, ``d`` the
  Euclidean distance (mm) from the voxel to the nodule mask (0 inside).
* Candidate generation: random crops of the scan, half of them containing a nodule, with the
  nodules' cube boxes (the blob heatmap target of Section 3.1 is built from them on device).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nodulejax.data import patchstore
from nodulejax.data.patches import extract_patch
from nodulejax.data.prepare import PreparedScan


def _far_from(points, findings, radius_vox):
    if len(findings) == 0 or len(points) == 0:
        return np.ones(len(points), bool)
    d2 = ((points[:, None, :] - findings[None, :, :]) ** 2).sum(-1)
    return (d2 > radius_vox ** 2).all(1)


def _fpr_sites(scans, neg_radius_mm, max_neg_per_scan, seed) -> list[tuple[int, int, list]]:
    """Where the FPR patches of ``scans`` are cut: ``[(scan index, label, centres), ...]``,
    positives then negatives of each scan in scan order; ``centres`` the voxel ``zyx`` rows
    as found in the scan (the negatives drawn with ``np.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(scans):
        findings = np.concatenate([s.nodules_zyx, s.excluded_zyx]) if len(s.excluded_zyx) \
            else s.nodules_zyx
        neg = s.cand_zyx[s.cand_label == 0] if len(s.cand_zyx) else np.zeros((0, 3))
        neg = neg[_far_from(neg, findings, neg_radius_mm / s.spacing)]
        if max_neg_per_scan is not None and len(neg) > max_neg_per_scan:
            neg = neg[np.sort(rng.choice(len(neg), max_neg_per_scan, replace=False))]
        out += [(i, 1, list(s.nodules_zyx)), (i, 0, list(neg))]
    return out


def _fpr_rows(scans, sites, patch_size):
    """The patches ``(P, P, P) float16`` at ``sites``, one at a time, scan by scan."""
    for i, _, centres in sites:
        image = scans[i].image if centres else None
        for c in centres:
            yield extract_patch(image, c, patch_size, 0.0).astype(np.float16)


def fpr_patches(scans: list[PreparedScan], patch_size: int, *, neg_radius_mm: float = 10.0,
                max_neg_per_scan: int | None = None, seed: int = 0,
                root: str | None = None) -> dict:
    """FPR candidate patches of ``scans``.

    Returns dict with ``x (N, P, P, P) float16``, ``y (N,) int32`` (1 nodule, 0 not),
    ``scan (N,) int32`` index into ``scans`` and ``zyx (N, 3) float32`` patch centres.

    ``root``: a folder of patch sets on disk (``WORKDIR/patches``,
    :func:`~nodulejax.data.patchstore.patch_sets_dir`). The set is then written once,
    streaming patch by patch, to ``root/fpr_p<P>_<digest>/`` (:mod:`nodulejax.data.patchstore`;
    the digest of the set's fingerprint: patch size, negative radius and cap, seed, scan uids
    and spacings, the sites' coordinates) and read back by
    every later call with the same inputs; ``x`` is then a lazy
    :class:`~nodulejax.data.records.RecordArray` (rows read from disk on demand, host memory
    independent of N), with the same values as the in-memory set. Without ``root`` every
    array is in memory.
    """
    p = int(patch_size)
    sites = _fpr_sites(scans, neg_radius_mm, max_neg_per_scan, seed)
    y = np.asarray([label for _, label, c in sites for _ in c], np.int32)
    sid = np.asarray([i for i, _, c in sites for _ in c], np.int32)
    cen = np.asarray([v for _, _, c in sites for v in c], np.float32).reshape(-1, 3)
    if root is None:
        xs = list(_fpr_rows(scans, sites, p))
        return dict(x=np.stack(xs) if xs else np.zeros((0, p, p, p), np.float16),
                    y=y, scan=sid, zyx=cen)
    fp = {"kind": "fpr", "format": 1, "patch_size": p, "neg_radius_mm": float(neg_radius_mm),
          "max_neg_per_scan": None if max_neg_per_scan is None else int(max_neg_per_scan),
          # the seed only draws the capped negatives
          "seed": None if max_neg_per_scan is None else int(seed),
          **patchstore.scans_fingerprint(scans),
          "sites_sha256": patchstore.digest(y, sid, np.asarray(
              [v for _, _, c in sites for v in c], np.float64).reshape(-1, 3))}
    return patchstore.cached_set(root, f"fpr_p{p}", fp, {"y": y, "scan": sid, "zyx": cen},
                                 lambda: {"x": ((p, p, p), np.float16,
                                                _fpr_rows(scans, sites, p))})


def seg_patches(scans: list[PreparedScan], patch_size: int, *, negatives_per_scan: int = 2,
                seed: int = 0, root: str | None = None) -> dict:
    """Nodule patches with binary masks (``x`` float16, ``mask`` bool, both ``(N, P, P, P)``):
    each scan's nodules, then ``negatives_per_scan`` random lung voxels (drawn with
    ``np.random.default_rng(seed)``, scan after scan). ``root``: written once to
    ``root/seg_p<P>_<digest>/`` and read back by row (as :func:`fpr_patches`)."""
    rng = np.random.default_rng(seed)
    sites = []
    for i, s in enumerate(scans):
        centres = list(s.nodules_zyx)
        n_lung = s.lung_count
        if n_lung:  # rows of np.argwhere(s.lung), read slice by slice
            centres += list(s.lung_voxels(rng.choice(n_lung, negatives_per_scan)))
        sites.append((i, centres))
    p = int(patch_size)

    def rows(what):
        for i, centres in sites:
            s = scans[i]
            vol = s.image if what == "x" else s.nodule_mask()
            for c in centres:
                yield (extract_patch(vol, c, p, 0.0).astype(np.float16) if what == "x"
                       else extract_patch(vol, c, p, 0) > 0)

    if root is None:
        xs, ms = list(rows("x")), list(rows("mask"))
        return dict(x=np.stack(xs) if xs else np.zeros((0, p, p, p), np.float16),
                    mask=np.stack(ms) if ms else np.zeros((0, p, p, p), bool))
    centres = np.asarray([c for _, cs in sites for c in cs], np.float64).reshape(-1, 3)
    sid = np.asarray([i for i, cs in sites for _ in cs], np.int32)
    fp = {"kind": "seg", "format": 1, "patch_size": p,
          "negatives_per_scan": int(negatives_per_scan), "seed": int(seed),
          **patchstore.scans_fingerprint(scans), "sites_sha256": patchstore.digest(sid, centres)}
    return patchstore.cached_set(
        root, f"seg_p{p}", fp, {"scan": sid, "zyx": centres.astype(np.float32)},
        lambda: {"x": ((p, p, p), np.float16, rows("x")), "mask": ((p, p, p), bool,
                                                                     rows("mask"))})


def nodule_cutouts(scans: list[PreparedScan], patch_size: int, *, blur_mm: float = 2.0,
                   min_diameter_mm: float = 0.0) -> dict:
    """Context-free nodules for the synthesizer (Section 3.2), ``x (N, P, P, P) float32``.

    Each nodule's patch is multiplied by its blurred mask ``w = clip(1 - d/blur_mm, 0, 1)``;
    ``type`` and ``diameter_mm`` per nodule are returned alongside.
    """
    xs, types, diams = [], [], []
    for s in scans:
        labels = s.nodule_mask()
        for i, c in enumerate(s.nodules_zyx):
            if s.nodules_diam_mm[i] < min_diameter_mm:
                continue
            img = extract_patch(s.image, c, patch_size, 0.0).astype(np.float32)
            lab = extract_patch(labels, c, patch_size, 0) == i + 1
            if not lab.any():
                continue
            d_mm = ndimage.distance_transform_edt(~lab) * s.spacing
            w = np.clip(1.0 - d_mm / blur_mm, 0.0, 1.0)
            xs.append(img * w)
            types.append(s.nodule_types[i] if len(s.nodule_types) else "unknown")
            diams.append(s.nodules_diam_mm[i])
    p = patch_size
    return dict(x=np.stack(xs) if xs else np.zeros((0, p, p, p), np.float32),
                type=np.asarray(types, object), diameter_mm=np.asarray(diams, np.float32))


def cg_crop_batch(scans: list[PreparedScan], size: int, batch: int, rng: np.random.Generator,
                  *, pos_frac: float = 0.5, types: tuple[str, ...] | None = None,
                  max_nodules: int = 8) -> dict:
    """A batch of candidate-generation training crops.

    With probability ``pos_frac`` a crop is centred (with jitter of a quarter crop) on a nodule
    (restricted to ``types`` when given, e.g. the ground-glass fine-tune); otherwise it is a
    random lung location. Returns ``image (B, S, S, S)``, ``heatmap (B, S, S, S)``, and
    ``boxes (B, M, 4)`` cube boxes ``z, y, x, d`` in crop voxels padded to ``max_nodules``
    rows with ``valid (B, M) bool``. The blob heatmap target is made on the device from the
    boxes' centres (``nodulejax.losses.detection.heatmap_target`` with ``valid``).
    """
    eligible = [(i, j) for i, s in enumerate(scans) for j in range(len(s.nodules_zyx))
                if types is None or (len(s.nodule_types) and s.nodule_types[j] in types)]
    imgs = []
    boxes = np.zeros((batch, max_nodules, 4), np.float32)
    valid = np.zeros((batch, max_nodules), bool)
    for b in range(batch):
        if eligible and rng.random() < pos_frac:
            i, j = eligible[rng.integers(len(eligible))]
            s = scans[i]
            centre = s.nodules_zyx[j] + rng.uniform(-size / 4, size / 4, 3)
        else:
            s = scans[rng.integers(len(scans))]
            n_lung = s.lung_count  # a row of np.argwhere(s.lung), read from its slice
            centre = s.lung_voxels([rng.integers(n_lung)])[0] if n_lung else \
                np.array(s.image.shape) / 2
        start = np.round(centre).astype(int) - size // 2
        imgs.append(extract_patch(s.image, start + size // 2, size, 0.0).astype(np.float32))
        local = s.nodules_zyx - start
        inside = np.all((local >= 0) & (local < size), axis=1) if len(local) else np.zeros(0, bool)
        d = s.nodules_diam_mm[inside] / s.spacing
        m = min(int(inside.sum()), max_nodules)
        boxes[b, :m, :3] = local[inside][:m]
        boxes[b, :m, 3] = d[:m]
        valid[b, :m] = True
    return dict(image=np.stack(imgs), boxes=boxes, valid=valid)
