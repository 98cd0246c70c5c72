"""Chest anatomy of the synthetic low-dose CT phantom: grid, body wall, lungs, vessels, bones.

Everything is defined in a *patient frame*: LPS millimetres (x = patient left, y = posterior,
z = superior) with x = y = 0 on the body axis and z = 0 at the lowest point of the lungs
(costophrenic recess).  A :class:`Grid` maps that frame to voxel indices (z, y, x) and to
LUNA16/ITK world coordinates, flipped directions (``TransformMatrix -1 0 0 0 -1 0 0 0 1``)
included.  Anatomical sizes are the adult values times ``size_scale`` (paper Section 4 uses
real LIDC/NLST chests; the phantom shrinks the chest so a laptop CPU can run the study);
nodules (phantom_nodules.py) keep their real millimetre sizes.

All randomness comes from a ``np.random.Generator`` passed in; no global state.
"""

from __future__ import annotations

import dataclasses

import numpy as np

HU_AIR = -1000.0
HU_FAT = -100.0
HU_MUSCLE = 40.0
HU_BLOOD = 40.0
HU_LUNG = -850.0


@dataclasses.dataclass(frozen=True)
class Grid:
    """Voxel grid of one scan.  shape/spacing are (z, y, x); origin is world (x, y, z) mm.

    ``signs`` (x, y, z) are the diagonal of the ITK direction matrix; ``center`` is the world
    position of the patient-frame origin.
    """

    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray
    signs: np.ndarray
    center: np.ndarray

    @property
    def direction(self) -> np.ndarray:
        return np.diag(self.signs.astype(np.float64))

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame coordinate (mm) of every index along z, y and x: three 1D arrays."""
        out = []
        for a, xyz in ((0, 2), (1, 1), (2, 0)):
            idx = np.arange(self.shape[a], dtype=np.float64)
            out.append(
                self.origin[xyz] - self.center[xyz] + self.signs[xyz] * self.spacing[a] * idx
            )
        return out[0], out[1], out[2]

    def patient_to_index(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) patient-frame xyz mm -> (N, 3) continuous zyx indices."""
        pts = np.atleast_2d(pts)
        w = pts + self.center
        xyz_idx = (w - self.origin) / (self.signs * self.spacing[::-1])
        return xyz_idx[:, ::-1]

    def patient_to_world(self, pts: np.ndarray) -> np.ndarray:
        return np.atleast_2d(pts) + self.center

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) covering the patient-frame box [lo, hi] (xyz), or None."""
        a = self.patient_to_index(np.stack([lo, hi]))
        i0 = np.maximum(np.floor(a.min(0)).astype(int), 0)
        i1 = np.minimum(np.ceil(a.max(0)).astype(int) + 1, self.shape)
        if np.any(i1 <= i0):
            return None
        return tuple(slice(int(b), int(e)) for b, e in zip(i0, i1, strict=True))


@dataclasses.dataclass
class Anatomy:
    """Random chest parameters (mm, patient frame)."""

    s: float
    body_ax: float
    body_ay: float
    skin: float
    fat: float
    muscle: float
    rib_zone: float
    lung_h: float
    med_half: float
    lung_ax: float
    lung_ay: float
    lung_cx: float
    lung_cy: float
    dome_h: tuple[float, float]  # (right lung = -x, left lung = +x)
    pert: np.ndarray  # (2 lungs, K, 7): amp, fz, phz, fx, fy, phxy, unused
    heart: np.ndarray  # cx, cy, cz, ax, ay, az
    spine_y: float
    z_lo: float
    z_hi: float

    @property
    def wall(self) -> float:
        return self.skin + self.fat + self.muscle + self.rib_zone

    @property
    def cav_ax(self) -> float:
        return self.body_ax - self.wall

    @property
    def cav_ay(self) -> float:
        return self.body_ay - self.wall


def sample_anatomy(rng: np.random.Generator, s: float) -> Anatomy:
    """Draw one chest at scale ``s`` (1.0 = adult: body ~340 x 240 mm, lungs ~250 mm tall)."""
    u = rng.uniform
    body_ax, body_ay = 170 * s * u(0.9, 1.08), 120 * s * u(0.9, 1.08)
    skin, fat, muscle, rib_zone = 1.8, u(6, 18) * s, u(8, 14) * s, max(6.0 * s, 3.0)
    wall = skin + fat + muscle + rib_zone
    cav_ax, cav_ay = body_ax - wall, body_ay - wall
    med_half = cav_ax * u(0.16, 0.22)
    lung_ax = (cav_ax - med_half) / 2 * 1.02
    lung_ay = cav_ay * u(0.86, 0.94)
    lung_h = 250 * s * u(0.88, 1.08)
    pert = np.zeros((2, 3, 7))
    for side in range(2):
        for k in range(3):
            wl = u(40, 120) * s
            pert[side, k] = [
                u(0.02, 0.07),
                2 * np.pi / wl * u(0.5, 1.5),
                u(0, 2 * np.pi),
                2 * np.pi / wl * u(-1, 1),
                2 * np.pi / wl * u(-1, 1),
                u(0, 2 * np.pi),
                0,
            ]
    heart = np.array(
        [
            cav_ax * u(0.12, 0.22),
            -cav_ay * u(0.2, 0.35),
            lung_h * u(0.18, 0.26),
            cav_ax * u(0.38, 0.46),
            cav_ay * u(0.42, 0.52),
            lung_h * u(0.25, 0.32),
        ]
    )
    dome = lung_h * u(0.22, 0.3)
    return Anatomy(
        s=s,
        body_ax=body_ax,
        body_ay=body_ay,
        skin=skin,
        fat=fat,
        muscle=muscle,
        rib_zone=rib_zone,
        lung_h=lung_h,
        med_half=med_half,
        lung_ax=lung_ax,
        lung_ay=lung_ay,
        lung_cx=med_half + lung_ax,
        lung_cy=cav_ay * 0.04,
        dome_h=(dome * 1.12, dome),
        pert=pert,
        heart=heart,
        spine_y=cav_ay * 0.62,
        z_lo=-12 * s - 4,
        z_hi=lung_h + 8 * s + 3,
    )


def _wall_depth(a: Anatomy, x, y):
    """Approximate depth (mm) below the skin along the ray from the body axis; broadcasts."""
    rho = np.sqrt((x / a.body_ax) ** 2 + (y / a.body_ay) ** 2)
    th = np.arctan2(y, x)
    ray = 1.0 / np.sqrt((np.cos(th) / a.body_ax) ** 2 + (np.sin(th) / a.body_ay) ** 2)
    return (1.0 - rho) * ray, th


def lung_inside(a: Anatomy, x, y, z, side: int) -> np.ndarray:
    """Bool: is (x, y, z) (patient mm, broadcastable) inside lung ``side`` (0 right, 1 left)."""
    sg = -1.0 if side == 0 else 1.0
    t = (z - 0.0) / a.lung_h
    w2 = np.where(t <= 0.45, 1.0, np.clip(1 - ((t - 0.45) / 0.55) ** 2, 1e-6, 1.0))
    u = (x - sg * a.lung_cx) / a.lung_ax
    v = (y - a.lung_cy) / a.lung_ay
    r2 = u * u + v * v
    floor = a.dome_h[side] * np.clip(1 - r2, 0, 1)
    pert = 0.0
    for amp, fz, phz, fx, fy, ph, _ in a.pert[side]:
        pert = pert + amp * np.cos(fz * z + phz) * np.cos(fx * x + fy * y + ph)
    depth, _ = _wall_depth(a, x, y)
    inside = (r2 / w2 + pert < 1.0) & (z > floor) & (t < 1.0) & (depth > a.wall)
    h = a.heart
    if side == 1:
        hq = (
            ((x - h[0]) / (h[3] + 3)) ** 2
            + ((y - h[1]) / (h[4] + 3)) ** 2
            + ((z - h[2]) / (h[5] + 3)) ** 2
        )
        inside &= hq > 1.0
    return inside


def lung_inside_points(a: Anatomy, pts: np.ndarray) -> np.ndarray:
    """(N, 3) xyz -> (N,) bool, inside either lung."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    return lung_inside(a, x, y, z, 0) | lung_inside(a, x, y, z, 1)


def sample_grid(rng: np.random.Generator, a: Anatomy, max_voxels: int, flip_prob: float) -> Grid:
    """Scanner geometry: LUNA16-like spacing, random origin, sometimes a flipped direction.

    In-plane spacing U(0.5, 0.9) mm and slice thickness from the common LUNA16 values
    (0.625-2.5 mm).  If the field of view would exceed ``max_voxels`` all three spacings are
    multiplied by one common factor (documented coarsening that keeps the volume small).
    """
    sxy = rng.uniform(0.5, 0.9)
    sz = rng.choice(
        [0.625, 0.7, 1.0, 1.25, 1.5, 2.0, 2.5], p=[0.15, 0.05, 0.1, 0.25, 0.05, 0.1, 0.3]
    )
    ext = np.array([a.z_hi - a.z_lo, 2 * a.body_ay + 14 * a.s + 8, 2 * a.body_ax + 8 * a.s + 6])
    sp = np.array([sz, sxy, sxy])
    n = np.prod(ext / sp)
    if n > max_voxels:  # one common factor, then slices capped at 2.5 mm and the rest in-plane
        sp = sp * (n / max_voxels) ** (1 / 3)
        if sp[0] > 2.5:
            sp[1:] *= np.sqrt(sp[0] / 2.5)
            sp[0] = 2.5
    while np.prod(np.ceil(ext / sp)) > max_voxels:
        sp = sp * 1.01
    shape = tuple(int(v) for v in np.ceil(ext / sp).astype(int))
    signs = np.array([1.0, 1.0, 1.0])
    if rng.uniform() < flip_prob:
        signs = np.array([-1.0, -1.0, 1.0])
    # world position of the patient-frame origin (LUNA16-like ranges), patient off-centre in FOV
    center = np.array([rng.uniform(-25, 25), rng.uniform(-230, 30), rng.uniform(-330, -80)])
    lo_patient = np.array([-ext[2] / 2, -ext[1] / 2 + 2 * a.s, a.z_lo])  # xyz of the FOV corner
    lo_patient[:2] += rng.uniform(-3, 3, size=2) * a.s
    # voxel 0 sits at the low corner along an unflipped axis, the high corner along a flipped one
    ext_xyz = (np.array(shape)[::-1] - 1) * sp[::-1]
    first = np.where(signs > 0, lo_patient, lo_patient + ext_xyz)
    origin = np.round(center + first, 4)
    return Grid(shape=shape, spacing=sp, origin=origin, signs=signs, center=center)


# ---------------------------------------------------------------------------------------------
# tubes (vessels, airways): segment lists and their rendering as tapered capsules
# ---------------------------------------------------------------------------------------------


def _rotate_away(d: np.ndarray, angle: float, rng: np.random.Generator, axis=None):
    """Unit vector at ``angle`` radians from unit vector d, around a random (or given) normal."""
    if axis is None:
        r = rng.normal(size=3)
        axis = r - r.dot(d) * d
    axis = axis / (np.linalg.norm(axis) + 1e-12)
    return np.cos(angle) * d + np.sin(angle) * axis, axis


def grow_tree(
    rng,
    a: Anatomy,
    inside,
    root: np.ndarray,
    dirs: list,
    r0: float,
    tree: int,
    r_min: float = 0.35,
    max_segments: int = 900,
) -> tuple[np.ndarray, np.ndarray]:
    """Recursive asymmetric branching with Murray-like radius taper (children 0.8 r, 0.65 r).

    Returns segments (M, 9): x0 y0 z0 x1 y1 z1 r0 r1 tree, and branch points (B, 4): xyz, r.
    Segment length ~ k * r with k chosen so root-to-leaf paths span the lung.  ``inside``:
    (N, 3) xyz -> (N,) bool lung test (a coarse lookup, see phantom_nodules.LungDepth).
    """
    k = 1.9 * (a.lung_h * 0.5) / (5.0 * r0)
    segs, branches = [], []
    stack = [(root.astype(float), np.asarray(d, float) / np.linalg.norm(d), r0, 0) for d in dirs]
    while stack and len(segs) < max_segments:
        p, d, r, g = stack.pop()
        if r < r_min:
            continue
        ok = False
        for _ in range(4):
            dd, _ = _rotate_away(d, rng.uniform(0, 0.25), rng)
            length = k * r * rng.uniform(0.7, 1.3) * (0.45 if g == 0 else 1.0)
            q = p + dd * length
            if g == 0 or inside(q[None])[0]:
                ok = True
                break
        if not ok:
            q = p + dd * length * 0.4
            if not inside(q[None])[0]:
                continue
        r_end = r * rng.uniform(0.9, 0.97)
        segs.append([*p, *q, r, r_end, tree])
        if g > 0 and r_end >= 1.0:
            branches.append([*q, r_end])
        c1, ax = _rotate_away(dd, np.deg2rad(rng.uniform(12, 32)), rng)
        c2, _ = _rotate_away(dd, -np.deg2rad(rng.uniform(35, 70)), rng, axis=ax)
        stack.append((q, c2, r_end * rng.uniform(0.55, 0.72), g + 1))
        stack.append((q, c1, r_end * rng.uniform(0.78, 0.88), g + 1))
    return np.array(segs).reshape(-1, 9), np.array(branches).reshape(-1, 4)


def render_capsules(
    grid: Grid,
    axes,
    segs: np.ndarray,
    out: np.ndarray,
    edge_mm: float,
    scale: float = 1.0,
    add: float = 0.0,
) -> None:
    """Max-composite the partial-volume occupancy of tapered capsules into ``out`` (z, y, x).

    Radii are multiplied by ``scale`` and increased by ``add`` mm (airway walls use this).
    Occupancy = clip((r(t) - dist) / edge_mm + 0.5, 0, 1), dist to the segment axis in mm.
    """
    zc, yc, xc = axes
    for s in segs:
        p0, p1 = s[0:3], s[3:6]
        ra, rb = s[6] * scale + add, s[7] * scale + add
        pad = max(ra, rb) + edge_mm
        bx = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
        if bx is None:
            continue
        Z = zc[bx[0]][:, None, None] - p0[2]
        Y = yc[bx[1]][None, :, None] - p0[1]
        X = xc[bx[2]][None, None, :] - p0[0]
        d = p1 - p0
        L2 = max(float(d.dot(d)), 1e-9)
        t = np.clip((X * d[0] + Y * d[1] + Z * d[2]) / L2, 0.0, 1.0)
        dist = np.sqrt((X - t * d[0]) ** 2 + (Y - t * d[1]) ** 2 + (Z - t * d[2]) ** 2)
        occ = np.clip((ra + t * (rb - ra) - dist) / edge_mm + 0.5, 0.0, 1.0).astype(np.float32)
        np.maximum(out[bx], occ, out=out[bx])


def vessel_trees(rng, a: Anatomy, inside):
    """Pulmonary arteries and veins: two trees per lung from each hilum (4 trees).

    Returns (segments (M, 9), branch points (B, 4)); ``tree`` ids 0..3.
    """
    segs, brs = [], []
    r0 = max(1.6, 5.0 * a.s)
    for side, sg in ((0, -1.0), (1, 1.0)):
        for tree_kind in range(2):
            hil = np.array(
                [
                    sg * (a.med_half + 0.15 * a.lung_ax),
                    a.lung_cy + (-0.12 if tree_kind == 0 else 0.1) * a.lung_ay,
                    a.lung_h * rng.uniform(0.48, 0.58),
                ]
            )
            zs = np.linspace(-0.9, 0.9, 6) + rng.uniform(-0.15, 0.15, 6)
            dirs = [np.array([sg * rng.uniform(0.4, 1.0), rng.uniform(-0.7, 0.7), z]) for z in zs]
            sgm, br = grow_tree(
                rng, a, inside, hil, dirs, r0 * rng.uniform(0.85, 1.0), tree=side * 2 + tree_kind
            )
            segs.append(sgm)
            brs.append(br)
    return np.concatenate(segs), np.concatenate(brs)


def airway_segments(rng, a: Anatomy, vessel_segs: np.ndarray) -> np.ndarray:
    """Trachea, carina, main bronchi and the bronchi beside the larger arterial branches.

    Returns (M, 9) segments (radius = lumen + wall).
    """
    r_tr = max(2.5, 9.0 * a.s)
    y_tr = a.spine_y - a.cav_ay * 0.45
    carina = np.array([0.0, y_tr, a.lung_h * 0.66])
    top = np.array([0.0, y_tr - 2 * a.s, a.z_hi + 5])
    segs = [[*top, *carina, r_tr, r_tr * 0.95, -1]]
    for _side, sg in ((0, -1.0), (1, 1.0)):
        hil = np.array([sg * (a.med_half + 0.1 * a.lung_ax), a.lung_cy, a.lung_h * 0.55])
        segs.append([*carina, *hil, r_tr * 0.7, r_tr * 0.6, -1])
    # bronchi accompany arteries (trees 0 and 2) while those are thick enough
    art = vessel_segs[(vessel_segs[:, 8] % 2 == 0) & (vessel_segs[:, 6] >= 1.2)]
    for sgm in art:
        p0, p1 = sgm[0:3], sgm[3:6]
        d = p1 - p0
        nrm = np.cross(d, [0.0, 0.0, 1.0])
        if np.linalg.norm(nrm) < 1e-6:
            nrm = np.array([1.0, 0.0, 0.0])
        nrm /= np.linalg.norm(nrm)
        off = nrm * (sgm[6] * 2.0 + 0.6)
        segs.append([*(p0 + off), *(p1 + off), sgm[6] * 0.9, sgm[7] * 0.9, -2])
    return np.array(segs, dtype=np.float64)
