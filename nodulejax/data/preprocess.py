"""CT preprocessing: resampling, HU windowing, a classical lung mask (paper Section 3.1).

The paper resamples every scan to 0.625 mm isotropic voxels and feeds the networks HU mapped
to [0, 1]; candidates and patches are restricted to the lungs. All functions run on the host
(numpy / scipy); arrays are ``(z, y, x)``, spacing ``(z, y, x)`` mm, HU before windowing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nodulejax.data.volume import CTVolume

__all__ = ["resample", "resample_array", "resampled_shape", "window", "lung_mask"]


# ----------------------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------------------


def _spacing3(spacing, name: str) -> np.ndarray:
    s = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be finite and positive (z, y, x) mm, got {spacing}")
    return s


def resampled_shape(shape, spacing_in, spacing_out) -> tuple[int, int, int]:
    """Voxel counts of the resampled grid: ``floor((n - 1) * s_in / s_out + 1e-6) + 1`` per axis,
    i.e. the largest grid with the same first voxel centre whose voxel centres all lie within
    the input's voxel-centre extent ``[0, (n - 1) * s_in]`` mm (no extrapolation)."""
    s_in, s_out = _spacing3(spacing_in, "spacing_in"), _spacing3(spacing_out, "spacing_out")
    n = np.asarray(shape, dtype=np.float64)
    return tuple(int(v) for v in np.floor((n - 1) * s_in / s_out + 1e-6).astype(int) + 1)


def resample_array(array: np.ndarray, spacing_in, spacing_out, order: int = 1) -> np.ndarray:
    """Resample a ``(z, y, x)`` array from ``spacing_in`` to ``spacing_out`` (mm).

    Output voxel ``j`` (per axis) samples the input at continuous index ``j * s_out / s_in``,
    so output voxel 0 sits exactly on input voxel 0 and every output voxel keeps its physical
    offset ``j * s_out`` from it (``scipy.ndimage.affine_transform`` with a diagonal matrix,
    spline ``order``; 0 = nearest, 1 = trilinear). Shape from :func:`resampled_shape`.
    Boolean input is resampled with nearest neighbour and returned as bool."""
    s_in, s_out = _spacing3(spacing_in, "spacing_in"), _spacing3(spacing_out, "spacing_out")
    a = np.asarray(array)
    if a.ndim != 3:
        raise ValueError(f"resample_array expects a 3D (z, y, x) array, got shape {a.shape}")
    out_shape = resampled_shape(a.shape, s_in, s_out)
    is_bool = a.dtype == np.bool_
    if is_bool:
        a, order = a.astype(np.uint8), 0
    elif not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    out = ndimage.affine_transform(
        a,
        s_out / s_in,  # 1-D matrix = diagonal: in_index = out_index * s_out / s_in
        offset=0.0,
        output_shape=out_shape,
        order=order,
        mode="nearest",  # only guards float rounding at the far edge; no extrapolation
        prefilter=order > 1,
    )
    return out.astype(bool) if is_bool else out


def resample(volume: CTVolume, spacing_mm=0.625, order: int = 1) -> CTVolume:
    """Resample a CT volume to ``spacing_mm`` (float = isotropic, or ``(z, y, x)`` mm).

    World coordinates are preserved: the new grid has the same origin (voxel ``(0, 0, 0)`` at
    the same world point) and the same direction, only the spacing changes, and every new
    voxel samples the old volume at exactly its own world position (see
    :func:`resample_array`). A point at world ``xyz`` therefore maps through
    ``world_to_voxel`` to the same anatomy before and after. Paper Section 3.1: 0.625 mm."""
    s_out = _spacing3(spacing_mm, "spacing_mm")
    arr = resample_array(volume.array, volume.spacing, s_out, order=order).astype(np.float32)
    return CTVolume(
        array=arr,
        spacing=s_out,
        origin=volume.origin.copy(),
        direction=volume.direction.copy(),
        path=volume.path,
    )


# ----------------------------------------------------------------------------------------
# Windowing
# ----------------------------------------------------------------------------------------


def window(hu, lo: float = -1000.0, hi: float = 400.0) -> np.ndarray:
    """Map HU to [0, 1] float32: ``clip((hu - lo) / (hi - lo), 0, 1)``.

    Defaults are config ``data.hu_window``; values outside ``[lo, hi]`` saturate."""
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"window needs finite lo < hi, got lo={lo}, hi={hi}")
    h = np.asarray(hu, dtype=np.float32)
    return np.clip((h - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Lung mask
# ----------------------------------------------------------------------------------------


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _fill_holes_per_slice(mask: np.ndarray, max_hole_px: float | None = None) -> np.ndarray:
    """Fill 2D holes of each axial slice; with ``max_hole_px`` only holes up to that area."""
    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        if not mask[k].any():
            out[k] = mask[k]
            continue
        filled = ndimage.binary_fill_holes(mask[k])
        if max_hole_px is not None:
            holes = filled & ~mask[k]
            lab, n = ndimage.label(holes)
            if n:
                big = np.flatnonzero(np.bincount(lab.ravel())[1:] > max_hole_px) + 1
                filled &= ~np.isin(lab, big)
        out[k] = filled
    return out


def _airways(air, hu, body, spacing, superior_last, max_area_mm2, airway_hu, central_frac):
    """Trachea and main bronchi: per axial slice from the top, 2D air components that are small
    (< ``max_area_mm2``) and either (a) central, round-ish (bounding box aspect <= 2) and, if
    ``airway_hu`` is set, dark (mean HU below it), in the upper 40% of the air's z-extent (a
    seed), or (b) overlap an airway component of the slice above.
    Tracking stops where a bronchus merges into a lung-sized component (the hilum)."""
    out = np.zeros_like(air)
    zs = np.flatnonzero(air.any(axis=(1, 2)))
    if zs.size == 0:
        return out
    order = range(zs[-1], zs[0] - 1, -1) if superior_last else range(zs[0], zs[-1] + 1)
    z_top, z_bot = (zs[-1], zs[0]) if superior_last else (zs[0], zs[-1])
    seed_depth = 0.4 * (abs(z_top - z_bot) + 1)
    px_area = spacing[1] * spacing[2]
    bx = np.flatnonzero(body.any(axis=(0, 1)))
    mid_x_all = 0.5 * (bx[0] + bx[-1]) if bx.size else air.shape[2] / 2
    width_all = (bx[-1] - bx[0] + 1) if bx.size else air.shape[2]
    xs = np.arange(air.shape[2], dtype=np.float64)
    prev = np.zeros(air.shape[1:], bool)
    for z in order:
        lab, n = ndimage.label(air[z])
        cur = np.zeros_like(prev)
        if n:
            flat = lab.ravel()
            area = np.bincount(flat, minlength=n + 1) * px_area
            cx = np.bincount(flat, np.broadcast_to(xs, lab.shape).ravel(), n + 1)
            cx = cx / np.maximum(np.bincount(flat, minlength=n + 1), 1)
            mhu = np.bincount(flat, hu[z].ravel().astype(np.float64), n + 1)
            mhu = mhu / np.maximum(np.bincount(flat, minlength=n + 1), 1)
            overl = np.bincount(flat[prev.ravel()], minlength=n + 1) > 0
            bxz = np.flatnonzero(body[z].any(axis=0))
            mid_x = 0.5 * (bxz[0] + bxz[-1]) if bxz.size else mid_x_all
            width = (bxz[-1] - bxz[0] + 1) if bxz.size else width_all
            seeding = abs(z - z_top) < seed_depth
            boxes = ndimage.find_objects(lab)
            for i in range(1, n + 1):
                if area[i] >= max_area_mm2:
                    continue
                if not overl[i]:
                    if not seeding or abs(cx[i] - mid_x) >= central_frac * width:
                        continue
                    if airway_hu is not None and mhu[i] >= airway_hu:
                        continue
                    ext = [
                        (b.stop - b.start) * s
                        for b, s in zip(boxes[i - 1], spacing[1:], strict=True)
                    ]
                    if max(ext) > 2.0 * min(ext):  # trachea is round-ish, not a lung tongue
                        continue
                cur |= lab == i
        out[z] = cur
        prev = cur
    return out


def _split_merged(comp: np.ndarray, spacing, mid_x: float, max_mm: float = 30.0) -> list:
    """Split one component holding both lungs: erode (EDT threshold, mm) until it falls into
    two large pieces on opposite sides of the midline, then give every voxel of the component
    the label of its nearest piece. Returns [lung, lung] or [comp] if no split is found."""
    sl = ndimage.find_objects(comp.astype(np.uint8))[0]
    c = comp[sl]
    dist = ndimage.distance_transform_edt(c, sampling=spacing)
    x0 = sl[2].start
    for d in np.arange(1.0, max_mm + 1e-9, 1.0):
        core = dist > d
        lab, n = ndimage.label(core)
        if n < 2:
            if n == 0:
                break
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        big = np.argsort(sizes)[::-1][:2]
        if sizes[big[1]] < 0.1 * sizes[big[0]]:
            continue
        cxs = [np.mean(np.nonzero(lab == b)[2]) + x0 for b in big]
        if (cxs[0] - mid_x) * (cxs[1] - mid_x) >= 0:
            continue
        seeds = np.where(np.isin(lab, big), lab, 0)
        idx = ndimage.distance_transform_edt(
            seeds == 0, sampling=spacing, return_distances=False, return_indices=True
        )
        nearest = seeds[tuple(idx)]
        outs = []
        for b in big:
            m = np.zeros_like(comp)
            m[sl] = c & (nearest == b)
            outs.append(m)
        return outs
    return [comp]


def _edt_threshold(x: np.ndarray, spacing, radius: float, *, above: bool,
                   core: int = 96) -> np.ndarray:
    """``edt(x) > radius`` (``above``) or ``<= radius``, ``edt`` the Euclidean distance
    transform in mm (``ndimage.distance_transform_edt(x, sampling=spacing)``), computed over
    slabs of ``core`` z-slices with a halo of ``ceil(radius / spacing_z) + 1`` slices each
    side: a voxel's comparison only depends on zeros of ``x`` within ``radius``, all inside
    its slab, so the result is the whole-volume one (the distance to the same nearest zero)
    with the transform's memory (~20 bytes a voxel) for a slab, not the volume. A slab with
    no zero has none within ``radius``; ``x`` with no zero at all keeps scipy's own answer."""
    sp = np.broadcast_to(np.asarray(spacing, np.float64), (3,))
    if x.all() or x.shape[0] <= core:
        d = ndimage.distance_transform_edt(x, sampling=sp)
        return d > radius if above else d <= radius
    h = int(np.ceil(radius / sp[0])) + 1
    out = np.empty(x.shape, bool)
    for z0 in range(0, x.shape[0], core):
        z1 = min(z0 + core, x.shape[0])
        a, b = max(z0 - h, 0), min(z1 + h, x.shape[0])
        sub = x[a:b]
        if sub.all():
            out[z0:z1] = above
            continue
        d = ndimage.distance_transform_edt(sub, sampling=sp)[z0 - a: z1 - a]
        out[z0:z1] = d > radius if above else d <= radius
    return out


def _close(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Morphological closing by a ball of ``radius_mm`` (anisotropic-aware, via two EDTs) on
    the mask's bounding box; the volume's faces are extended by edge replication so the
    closing does not erode structures cut by the scan's field of view."""
    if radius_mm <= 0 or not mask.any():
        return mask
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    m = np.ceil(radius_mm / np.asarray(spacing)).astype(int) + 1
    lo = [max(s.start - mi, 0) for s, mi in zip(sl, m, strict=True)]
    hi = [min(s.stop + mi, n) for s, mi, n in zip(sl, m, mask.shape, strict=True)]
    crop = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    pad = [(mi, mi) for mi in m]
    big = np.pad(crop, pad, mode="edge")
    dil = _edt_threshold(~big, spacing, radius_mm, above=False)
    clo = _edt_threshold(dil, spacing, radius_mm, above=True)
    clo = clo[tuple(slice(mi, mi + n) for mi, n in zip(m, crop.shape, strict=True))]
    out = mask.copy()
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= clo
    return out


def _body_air(sm: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(air inside the body, body) of smoothed HU ``sm``: the body is the largest component
    above ``threshold`` with per-slice holes filled; air touching the in-plane border of the
    volume is outside the patient and dropped."""
    dense = sm >= threshold
    body = _fill_holes_per_slice(_largest_component(dense))
    air = (~dense) & body
    lab, n = ndimage.label(air)
    if n:
        edge = np.unique(np.concatenate([lab[:, 0, :].ravel(), lab[:, -1, :].ravel(),
                                         lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
        air &= ~np.isin(lab, edge[edge > 0])
    return air, body


def _label_x_sums(lab: np.ndarray, n: int, mid_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Per label 0..n of ``lab (z, y, x)``: the sum of the voxels' x indices and the count of
    voxels left of ``mid_x``, float64 (n + 1,). Summed slice by slice: integer sums, exact in
    float64, so the values of ``ndimage.sum_labels`` over the whole volume without its
    volume-sized float64 weights."""
    xs = np.arange(lab.shape[2], dtype=np.float64)
    left = (xs < mid_x).astype(np.float64)
    xsum, side = np.zeros(n + 1), np.zeros(n + 1)
    for k in range(lab.shape[0]):
        flat = lab[k].ravel()
        xsum += np.bincount(flat, np.broadcast_to(xs, lab.shape[1:]).ravel(), n + 1)
        side += np.bincount(flat, np.broadcast_to(left, lab.shape[1:]).ravel(), n + 1)
    return xsum, side


def _two_lungs(cand: np.ndarray, body: np.ndarray, sp, min_lung_ml: float) -> list[np.ndarray]:
    """Step (4) of :func:`lung_mask`: the lung components of the candidate air ``cand``."""
    shape = cand.shape
    lab, n = ndimage.label(cand)
    lungs: list[np.ndarray] = []
    if n:
        sizes = np.bincount(lab.ravel()).astype(np.float64)
        sizes[0] = 0
        min_vox = min_lung_ml * 1000.0 / float(np.prod(sp))
        bx = np.flatnonzero(body.any(axis=(0, 1)))
        mid_x = 0.5 * (bx[0] + bx[-1]) if bx.size else shape[2] / 2
        xsum, side_left = _label_x_sums(lab, n, mid_x)
        cx = xsum / np.maximum(sizes, 1)
        first = int(np.argmax(sizes))
        if sizes[first] >= min_vox:
            frac_left = side_left[first] / sizes[first]
            comp = lab == first
            if 0.2 < frac_left < 0.8:
                lungs = _split_merged(comp, sp, mid_x)
            else:
                lungs = [comp]
                other = [
                    i
                    for i in np.argsort(sizes)[::-1]
                    if i != first
                    and sizes[i] >= min_vox
                    and (cx[i] - mid_x) * (cx[first] - mid_x) < 0
                ]
                if other:
                    lungs.append(lab == other[0])
    return lungs


def lung_mask(
    volume_or_hu,
    spacing=None,
    *,
    threshold: float = -320.0,
    superior_last: bool | None = None,
    smooth_mm: float = 1.0,
    closing_mm: float = 10.0,
    airway_max_area_mm2: float = 900.0,
    airway_hu: float | None = None,
    central_frac: float = 0.15,
    min_lung_ml: float = 5.0,
    max_hole_mm2: float = 1500.0,
) -> np.ndarray:
    """Classical lung mask -> bool ``(z, y, x)``: both lungs, trachea and main bronchi excluded,
    vessels and juxta-pleural nodules inside.

    Args:
      volume_or_hu: a ``CTVolume`` or a ``(z, y, x)`` HU array (axial slices).
      spacing: ``(z, y, x)`` mm (taken from the volume when omitted).
      superior_last: whether the last z index is the head end. Default: from the volume's
        direction (world z of index axis z > 0 means superior last); ``True`` for a bare array
        (LUNA16's identity direction).

    Steps: (1) Gaussian smoothing (``smooth_mm``) against low-dose noise; (2) air = HU below
    ``threshold``; the body = largest component above it with per-slice holes filled; air
    outside the body or connected to the in-plane border of the volume is dropped;
    (3) trachea / main bronchi found by tracking small central dark air regions down from the
    top slice (see ``_airways``) and removed (dilated by one voxel in-plane to cut thin walls);
    (4) 3D components: the largest; if it spans both sides of the body midline it is split by
    erosion into two lungs, otherwise the largest component on the other side of the midline
    is the second lung (components under ``min_lung_ml`` are ignored); (5) per lung, a
    morphological closing by a ``closing_mm`` ball and per-slice filling of holes up to
    ``max_hole_mm2`` (vessels, nodules up to ~40 mm; not the diaphragm dome seen as a hole
    near the lung base), so vessels and juxta-pleural nodules lie inside; the airway lumen
    stays excluded and each lung keeps its largest connected piece.
    """
    if isinstance(volume_or_hu, CTVolume):
        hu = volume_or_hu.array
        sp = volume_or_hu.spacing if spacing is None else spacing
        if superior_last is None:
            superior_last = bool(volume_or_hu.direction[2, 2] >= 0)
    else:
        hu = np.asarray(volume_or_hu, dtype=np.float32)
        if spacing is None:
            raise ValueError("lung_mask: spacing (z, y, x) mm is required for a bare array")
        sp = spacing
        if superior_last is None:
            superior_last = True
    sp = _spacing3(sp, "spacing")
    if hu.ndim != 3:
        raise ValueError(f"lung_mask expects a 3D (z, y, x) volume, got shape {hu.shape}")
    hu = np.asarray(hu, dtype=np.float32)
    sm = ndimage.gaussian_filter(hu, sigma=smooth_mm / sp) if smooth_mm > 0 else hu

    air, body = _body_air(sm, threshold)
    del sm  # (a volume of float32) not needed past the body

    airway = _airways(
        air, hu, body, sp, superior_last, airway_max_area_mm2, airway_hu, central_frac
    )
    airway_d = ndimage.binary_dilation(
        airway, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)
    )
    cand = air & ~airway_d

    lungs = _two_lungs(cand, body, sp, min_lung_ml)
    out = np.zeros(hu.shape, bool)
    full = np.ones((3, 3, 3), bool)
    max_hole_px = max_hole_mm2 / (sp[1] * sp[2])
    for lung in lungs:
        m = _fill_holes_per_slice(_close(lung, sp, closing_mm), max_hole_px) & ~airway
        if out.any():  # keep the lungs apart where they touch (e.g. after a split)
            m &= ~ndimage.binary_dilation(out, structure=full)
        out |= _largest_component(m)  # drop crumbs cut off by the airway / separation
    return out
