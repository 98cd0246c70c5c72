"""Render the phantom's chest background in HU: body wall, bones, mediastinum, lungs, tubes.

Called by ``phantom.generate_scan``; geometry and random anatomy come from phantom_anatomy.
HU values follow non-contrast chest CT: air -1000, lung -850 (denser posteriorly), fat -100,
muscle/blood +40, cancellous bone +250, cortical bone +700..1000.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nodulejax.data.phantom import anatomy as pa


def smooth_noise(rng: np.random.Generator, shape, sigma_vox, coarse: int = 2) -> np.ndarray:
    """Unit-variance Gaussian-smoothed noise (float32, ``shape``), built on a coarser grid.

    ``sigma_vox`` is the (z, y, x) smoothing in full-resolution voxels; the noise is drawn on a
    grid ``coarse`` times smaller in-plane and nearest-upsampled (cheap on a CPU).
    """
    cshape = (shape[0], -(-shape[1] // coarse), -(-shape[2] // coarse))
    n = rng.standard_normal(cshape, dtype=np.float32)
    sig = (sigma_vox[0], sigma_vox[1] / coarse, sigma_vox[2] / coarse)
    n = ndimage.gaussian_filter(n, sig, truncate=2.5, output=n)
    if coarse > 1:
        n = np.repeat(np.repeat(n, coarse, 1), coarse, 2)[:, : shape[1], : shape[2]]
    n *= 1.0 / max(float(n[::3, ::3, ::3].std()), 1e-6)
    return n


def _ellipse(x, y, cx, cy, ax, ay):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _draw_spine(hu, a: pa.Anatomy, X2, Y2, Z3) -> None:
    """Vertebral body (cortex + cancellous), discs, canal, posterior arch and sternum, in
    place on ``hu`` (z, y, x); X2 (1, x), Y2 (y, 1), Z3 (z, 1, 1) world mm."""
    vr = 18 * a.s + 2
    vb = _ellipse(X2, Y2, 0, a.spine_y, vr, vr * 0.85)
    canal_y = a.spine_y + vr * 0.85 + 6 * a.s + 1
    cn = _ellipse(X2, Y2, 0, canal_y, 6 * a.s + 1, 6 * a.s + 1)
    arch = (_ellipse(X2, Y2, 0, canal_y, 10 * a.s + 2, 10 * a.s + 2) < 1) & (cn >= 1)
    spin = (np.abs(X2) < 3 * a.s + 1) & (Y2 > canal_y) & (Y2 < canal_y + 22 * a.s)
    period = 26.0 * a.s + 2
    disc = np.mod(Z3, period) < 0.22 * period
    bone2d = np.where(vb < 0.72, 260.0, 750.0).astype(np.float32)
    m = vb < 1
    hu[:, m] = np.where(disc[:, 0, :], 90.0, bone2d[m][None, :])
    hu[:, arch | spin] = 600.0
    hu[:, cn < 1] = 20.0
    # sternum
    st = _ellipse(X2, Y2, 0, -a.body_ay + a.skin + a.fat + 4 * a.s, 12 * a.s + 1, 4 * a.s + 1)
    hu[(Z3 > a.lung_h * 0.3) & (st < 1)[None]] = 500.0


def _draw_ribs(hu, a: pa.Anatomy, depth, X2, Y2, Z3, zc) -> None:
    """Ribs, in place: periodic bands on the rim between muscle and cavity, sloping down
    anteriorly; ``depth`` (y, x) mm inside the body outline."""
    rib_c = a.wall - a.rib_zone * 0.5
    dr = (depth - rib_c) / (a.rib_zone * 0.5)  # -1..1 across the rib's thickness
    ang = np.abs(np.arctan2(X2, Y2))  # angle from the spine: 0 posterior (+y), pi anterior
    rib_period = a.lung_h / 9.0
    rib_h = rib_period * 0.38
    zone = (np.abs(dr) < 1) & (ang < 0.82 * np.pi)
    iy, ix = np.nonzero(zone)
    zz = np.mod(Z3[:, :, 0] + ang[iy, ix][None] * rib_period * 0.45, rib_period) / rib_h * 2 - 1
    e = dr[iy, ix][None] ** 2 + zz**2  # (nz, P): elliptic rib cross-section, < 1 inside
    zok = (zc > a.dome_h[0] * 0.3) & (zc < a.lung_h * 1.02)
    val = np.where(e > 0.45, 850.0, 280.0).astype(np.float32)
    rib = (e < 1.0) & zok[:, None]
    sub = hu[:, iy, ix]
    sub[rib] = val[rib]
    hu[:, iy, ix] = sub


def render_background(grid: pa.Grid, a: pa.Anatomy, rng: np.random.Generator):
    """Chest HU volume without tubes or nodules.

    Returns (hu float32 (z, y, x), lung bool (z, y, x), texture float32 (z, y, x) unit noise).
    """
    zc, yc, xc = grid.axes()
    nz, ny, nx = grid.shape
    X2, Y2 = xc[None, :], yc[:, None]
    Z3 = zc[:, None, None]
    depth, th = pa._wall_depth(a, X2, Y2)

    # --- body wall (2D, constant along z) -------------------------------------------------
    fat_t = a.fat * (1 + 0.45 * np.cos(2 * th) ** 2 - 0.3 * np.sin(th).clip(0, 1))
    sl = np.full((ny, nx), pa.HU_AIR, np.float32)
    sl[depth > 0] = 25.0  # skin
    sl[depth > a.skin] = pa.HU_FAT
    sl[depth > a.skin + fat_t] = pa.HU_MUSCLE
    cav = depth > a.wall
    sl[cav] = -85.0  # mediastinal fat
    # CT table: a curved carbon band under the patient
    ty = a.body_ay + 6 * a.s + 2
    table = (Y2 > ty) & (Y2 < ty + 3.0) & (np.abs(X2) < a.body_ax * 0.9)
    sl[table] = 150.0
    hu = np.broadcast_to(sl, grid.shape).copy()

    # --- abdomen below the diaphragm (liver right, spleen/stomach left) ----------------------
    r2r = _ellipse(X2, Y2, -a.lung_cx, a.lung_cy, a.lung_ax, a.lung_ay)
    r2l = _ellipse(X2, Y2, a.lung_cx, a.lung_cy, a.lung_ax, a.lung_ay)
    floor = np.where(
        X2 < 0, a.dome_h[0] * np.clip(1 - r2r, 0, 1), a.dome_h[1] * np.clip(1 - r2l, 0, 1)
    )
    floor = np.maximum(floor, np.where(np.abs(X2) < a.med_half, a.dome_h[1] * 0.7, 0))
    hu[(Z3 < floor[None]) & cav[None]] = 55.0

    # --- heart with an epicardial fat rim, descending aorta, esophagus -----------------------
    h = a.heart
    bx = grid.box(h[:3] - h[3:] - 4, h[:3] + h[3:] + 4)
    if bx is not None:
        q = (
            ((xc[bx[2]][None, None] - h[0]) / h[3]) ** 2
            + ((yc[bx[1]][None, :, None] - h[1]) / h[4]) ** 2
            + ((zc[bx[0]][:, None, None] - h[2]) / h[5]) ** 2
        )
        sub = hu[bx]
        sub[q < 1.15] = -90.0
        sub[q < 1.0] = 42.0
    ao = (
        _ellipse(X2, Y2, a.med_half * 0.55, a.spine_y - 18 * a.s - 2, 10 * a.s + 1, 10 * a.s + 1)
        < 1
    )
    es = (
        _ellipse(X2, Y2, -a.med_half * 0.15, a.spine_y - 15 * a.s - 2, 5 * a.s + 1, 4 * a.s + 1) < 1
    )
    up = Z3 > a.dome_h[1] * 0.8
    hu[ao[None] & up] = 40.0
    hu[es[None] & up] = 35.0

    _draw_spine(hu, a, X2, Y2, Z3)
    _draw_ribs(hu, a, depth, X2, Y2, Z3, zc)

    # --- lungs ---------------------------------------------------------------------------
    lung = np.zeros(grid.shape, bool)
    for side, sg in ((0, -1.0), (1, 1.0)):
        xs = np.nonzero(np.abs(xc - sg * a.lung_cx) <= a.lung_ax * 1.2)[0]
        if xs.size == 0:
            continue
        sx = slice(xs.min(), xs.max() + 1)
        lung[:, :, sx] |= pa.lung_inside(a, xc[sx][None, None, :], yc[None, :, None], Z3, side)
    sp = grid.spacing
    tex = smooth_noise(rng, grid.shape, 1.0 / sp)
    # gravity-dependent density: posterior (dependent) lung ~ +60 HU
    grad = (pa.HU_LUNG - 25 + 60 * np.clip((yc + a.lung_ay) / (2 * a.lung_ay), 0, 1)).astype(
        np.float32
    )
    lung_hu = grad[None, :, None] + 18.0 * tex
    hu[lung] = lung_hu[lung]
    return hu, lung, tex
