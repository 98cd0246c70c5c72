"""Phantom nodules: LUNA16 diameter distribution, the four types of the paper, placement, render.

Types (paper Section 4 / Table 1): solid, part-solid, ground-glass (GGO), calcified, drawn in
the paper's benchmark proportions (solid 197, calcified 26, part-solid 16, GGO 42 of 281).
Consensus diameters follow the real LUNA16 annotations.csv (1186 nodules, 3.25-32.3 mm),
embedded below as percentiles so no file is needed at run time.  Findings < 3 mm and
non-consensus findings become ``excluded`` (annotations_excluded.csv), as in LUNA16.

Shapes: geometric primitives (a sphere whose radius varies with a few zonal harmonics,
:func:`_shape`), or with ``shapes="lidc"`` (:func:`assign_lidc_shapes`) the LIDC-IDRI readers'
consensus outlines of real nodules for every finding >= 3 mm, which then also decide its type
(:mod:`nodulejax.data.phantom.shapes`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.polynomial import legendre
from scipy import ndimage
from scipy.spatial import cKDTree

from nodulejax.data.phantom import anatomy as pa
from nodulejax.data.phantom import shapes as ps

# percentiles 0, 1, ..., 100 of diameter_mm in LUNA16 annotations.csv (1186 nodules)
LUNA16_DIAMETER_PERCENTILES = np.array(
    [
        3.25,
        3.59,
        3.83,
        3.90,
        3.99,
        4.09,
        4.19,
        4.25,
        4.31,
        4.36,
        4.40,
        4.46,
        4.51,
        4.54,
        4.59,
        4.67,
        4.72,
        4.76,
        4.82,
        4.86,
        4.90,
        4.93,
        4.98,
        5.05,
        5.07,
        5.11,
        5.15,
        5.20,
        5.24,
        5.26,
        5.31,
        5.39,
        5.48,
        5.52,
        5.57,
        5.63,
        5.69,
        5.74,
        5.79,
        5.84,
        5.90,
        5.94,
        5.98,
        6.02,
        6.10,
        6.17,
        6.24,
        6.27,
        6.32,
        6.37,
        6.43,
        6.50,
        6.61,
        6.70,
        6.77,
        6.87,
        6.94,
        7.01,
        7.07,
        7.19,
        7.30,
        7.43,
        7.63,
        7.75,
        7.85,
        7.92,
        8.10,
        8.22,
        8.36,
        8.61,
        8.72,
        8.83,
        9.03,
        9.33,
        9.50,
        9.70,
        9.89,
        10.14,
        10.43,
        10.83,
        11.07,
        11.46,
        11.80,
        12.17,
        12.58,
        12.86,
        13.18,
        13.80,
        14.19,
        14.85,
        15.48,
        16.20,
        16.95,
        17.42,
        18.15,
        18.95,
        20.14,
        21.39,
        22.26,
        23.99,
        32.27,
    ]
)

TYPES = ("solid", "part-solid", "ground-glass", "calcified")
TYPE_PROBS = (197 / 281, 16 / 281, 42 / 281, 26 / 281)
MIN_DIAMETER = {"solid": 0.0, "part-solid": 6.0, "ground-glass": 0.0, "calcified": 4.0}
LOCATIONS = ("parenchymal", "juxta-pleural", "juxta-vascular")


@dataclasses.dataclass
class Nodule:
    """One finding. center: patient-frame xyz mm (phantom.generate_scan adds world coords).

    ``shape``: None (a geometric primitive) or the row of the LIDC shape index whose
    consensus mask it takes, turned by ``pose`` (:func:`assign_lidc_shapes`)."""

    diameter_mm: float
    type: str
    excluded: bool
    location: str = "parenchymal"
    center: np.ndarray | None = None
    world: np.ndarray | None = None
    label: int = 0
    shape: int | None = None
    pose: ps.Pose | None = None

    def shape_name(self, library: ps.ShapeLibrary | None = None) -> str:
        """``"primitive"`` or the LIDC nodule's key (``lidc:<seriesuid>:<annotation ids>``)."""
        if self.shape is None:
            return "primitive"
        return (library or ps.library()).rows[self.shape].key


def sample_diameters(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) diameters (mm) from LUNA16: inverse CDF of the percentiles, +-2% jitter."""
    u = rng.uniform(0, 100, size=n)
    d = np.interp(u, np.arange(101), LUNA16_DIAMETER_PERCENTILES)
    return np.clip(d * np.exp(rng.normal(0, 0.02, size=n)), 3.0, 34.0)


def _sample_type(rng, d: float, probs=TYPE_PROBS) -> str:
    p = np.array([pr if d >= MIN_DIAMETER[t] else 0.0 for t, pr in zip(TYPES, probs, strict=True)])
    return str(TYPES[rng.choice(4, p=p / p.sum())])


# consensus nodules per scan of the built-in distribution: P(0..5), mean 1.83
NODULE_COUNT_PROBS = (0.1, 0.38, 0.27, 0.13, 0.08, 0.04)
DEFAULT_NODULES_PER_SCAN = float(np.dot(np.arange(6), NODULE_COUNT_PROBS))


def sample_findings(rng: np.random.Generator, type_probs=TYPE_PROBS,
                    nodules_per_scan: float = 0.0) -> list[Nodule]:
    """Findings of one scan without positions: consensus nodules plus excluded ones.

    ``nodules_per_scan`` (the phantom's nodule density): 0 keeps the built-in 0-5
    distribution (:data:`NODULE_COUNT_PROBS`, mean 1.83; real LUNA16 has 1186 nodules in 888
    scans, 1.34 per scan); a value > 0 draws the count from Poisson(nodules_per_scan), so the
    expected number of consensus nodules per scan is that value. Diameters always follow
    LUNA16 (:func:`sample_diameters`); the excluded findings do not change with the density."""
    if nodules_per_scan < 0:
        raise ValueError(f"nodules_per_scan must be >= 0, got {nodules_per_scan}")
    if nodules_per_scan > 0:
        n = int(rng.poisson(nodules_per_scan))
    else:
        n = int(rng.choice(6, p=list(NODULE_COUNT_PROBS)))
    out = [
        Nodule(float(d), _sample_type(rng, d, type_probs), False) for d in sample_diameters(rng, n)
    ]
    for d in rng.uniform(1.5, 3.0, size=rng.poisson(0.8)):  # < 3 mm: excluded
        out.append(
            Nodule(
                float(d),
                str(rng.choice(["solid", "calcified", "ground-glass"], p=[0.7, 0.2, 0.1])),
                True,
            )
        )
    for _ in range(rng.poisson(0.5)):  # non-consensus (1-2 of 4 readers)
        d = float(min(sample_diameters(rng, 1)[0], rng.uniform(4, 12)))
        out.append(Nodule(d, str(rng.choice(["solid", "ground-glass"], p=[0.5, 0.5])), True))
    return out


def assign_lidc_shapes(rng: np.random.Generator, findings: list[Nodule],
                       library: ps.ShapeLibrary, min_diameter_mm: float = 3.0) -> list[Nodule]:
    """Give every finding of ``>= min_diameter_mm`` a real nodule's shape (in place): an index
    row near its diameter (:meth:`ShapeLibrary.choose`), a random :func:`~.shapes.pose`, and
    that nodule's type from its readers' ratings (:func:`~.shapes.nodule_type`). Smaller
    findings (LIDC has no outlines below 3 mm) keep their primitive shape and type."""
    for f in findings:
        if f.diameter_mm < min_diameter_mm:
            continue
        f.shape = library.choose(rng, f.diameter_mm)
        f.pose = ps.pose(rng)
        f.type = library.rows[f.shape].type
    return findings


class LungDepth:
    """Depth (mm) below the pleura on a coarse grid (analytic lung + Euclidean distance)."""

    def __init__(self, a: pa.Anatomy, step: float = 2.0):
        self.step = step
        self.lo = np.array([-a.cav_ax, -a.cav_ay, 0.0]) - step
        n = np.ceil((np.array([2 * a.cav_ax, 2 * a.cav_ay, a.lung_h]) + 2 * step) / step).astype(
            int
        )
        x = self.lo[0] + step * np.arange(n[0])
        y = self.lo[1] + step * np.arange(n[1])
        z = self.lo[2] + step * np.arange(n[2])
        inside = pa.lung_inside(
            a, x[None, None], y[None, :, None], z[:, None, None], 0
        ) | pa.lung_inside(a, x[None, None], y[None, :, None], z[:, None, None], 1)
        self.depth = ndimage.distance_transform_edt(inside, sampling=step).astype(np.float32)
        self.zyx = np.stack(np.nonzero(inside), 1)
        self.pts = self.lo + step * self.zyx[:, ::-1]  # xyz of inside cells
        self.pdepth = self.depth[tuple(self.zyx.T)]

    def at(self, pts: np.ndarray) -> np.ndarray:
        i = np.round((np.atleast_2d(pts) - self.lo) / self.step).astype(int)[:, ::-1]
        i = np.clip(i, 0, np.array(self.depth.shape) - 1)
        return self.depth[tuple(i.T)]

    def sample(self, rng, lo: float, hi: float, n: int = 1) -> np.ndarray | None:
        """n points whose depth lies in [lo, hi] mm (sub-cell jitter), or None if none exist."""
        ok = np.nonzero((self.pdepth >= lo) & (self.pdepth <= hi))[0]
        if ok.size == 0:
            return None
        pick = ok[rng.integers(0, ok.size, size=n)]
        return self.pts[pick] + rng.uniform(-0.5, 0.5, size=(n, 3)) * self.step


def place_findings(
    rng,
    a: pa.Anatomy,
    depth: LungDepth,
    findings: list[Nodule],
    vessels: np.ndarray,
    juxta_pleural_p=0.2,
    juxta_vascular_p=0.2,
) -> list[Nodule]:
    """Give each finding a location (parenchymal / juxta-pleural / juxta-vascular) and centre.

    Juxta-pleural: centre 0.6-1.0 radii below the pleura (the nodule touches the chest wall).
    Juxta-vascular: centre one radius (+ half the vessel radius) from a vessel >= 0.8 mm.
    Nodules keep >= 2 mm clearance from each other.
    """
    placed: list[Nodule] = []
    big = vessels[vessels[:, 6] >= 0.8]
    for f in sorted(findings, key=lambda f: -f.diameter_mm):
        r = f.diameter_mm / 2
        u = rng.uniform()
        kind = (
            "juxta-pleural"
            if (u < juxta_pleural_p and f.diameter_mm <= 15)
            else (
                "juxta-vascular"
                if u < juxta_pleural_p + juxta_vascular_p and len(big)
                else "parenchymal"
            )
        )
        c = None
        for _ in range(40):
            if kind == "juxta-pleural":
                q = depth.sample(rng, 0.6 * r, max(1.0 * r, 0.6 * r + depth.step))
            elif kind == "juxta-vascular":
                s = big[rng.integers(len(big))]
                p0, p1 = s[0:3], s[3:6]
                t = rng.uniform(0.2, 0.8)
                d = (p1 - p0) / (np.linalg.norm(p1 - p0) + 1e-9)
                n = rng.normal(size=3)
                n -= n.dot(d) * d
                n /= np.linalg.norm(n) + 1e-9
                q = (p0 + t * (p1 - p0) + n * (r + 0.5 * (s[6] + t * (s[7] - s[6]))))[None]
                if depth.at(q)[0] < r + 0.5:
                    q = None
            else:
                q = depth.sample(rng, r + 1.0, 1e9)
            if q is None:
                continue
            q = q[0]
            if all(np.linalg.norm(q - o.center) >= r + o.diameter_mm / 2 + 2.0 for o in placed):
                c = q
                break
        if c is None:  # fall back to the deepest free spot
            kind = "parenchymal"
            order = np.argsort(-depth.pdepth)[:200]
            c = depth.pts[order[rng.integers(len(order))]]
        f.location, f.center = kind, np.asarray(c, float)
        placed.append(f)
    return placed


def _shape(rng, ntype: str):
    """Zonal spherical harmonics (axes (K, 3), degrees (K,), amplitudes (K,)) of the surface."""
    k = int(rng.integers(3, 6))
    deg = rng.integers(2, 5, size=k)
    amp = rng.normal(0, {"solid": 0.07, "calcified": 0.03}.get(ntype, 0.08), size=k)
    if ntype == "solid" and rng.uniform() < 0.25:  # spiculated / lobulated margin
        deg = np.concatenate([deg, rng.integers(6, 11, size=4)])
        amp = np.concatenate([amp, rng.uniform(0.04, 0.09, size=4) * rng.choice([-1, 1], 4)])
    ax = rng.normal(size=(len(deg), 3))
    ax /= np.linalg.norm(ax, axis=1, keepdims=True)
    return ax, deg, amp


def _occupancy(X, Y, Z, dist, radius, shape, edge_mm):
    ax, deg, amp = shape
    rdir = np.ones_like(dist)
    inv = 1.0 / np.maximum(dist, 1e-6)
    for e, deg_l, w in zip(ax, deg, amp, strict=True):
        c = (X * e[0] + Y * e[1] + Z * e[2]) * inv
        rdir += w * legendre.legval(c, [0] * int(deg_l) + [1])
    return np.clip((radius * rdir - dist) / edge_mm + 0.5, 0.0, 1.0)


def render_nodules(
    rng,
    grid: pa.Grid,
    axes,
    nodules: list[Nodule],
    hu: np.ndarray,
    lung: np.ndarray,
    tex: np.ndarray,
    library: ps.ShapeLibrary | None = None,
) -> np.ndarray:
    """Composite nodules into ``hu`` in place; return the uint8 label mask (label = Nodule.label).

    HU: solid U(0, 90); ground-glass U(-680, -380) with fuzzy 1.2 mm margin; part-solid = GGO
    with a solid core of 0.35-0.6 diameters (>= 4 mm); calcified U(450, 1100).  The nodule is
    clipped to the lung so a juxta-pleural one abuts, not replaces, the chest wall.  A nodule
    with a real shape (``Nodule.shape``, from ``library``: default the process's
    :func:`~.shapes.library`) takes its occupancy from :func:`~.shapes.occupancy` (the same
    edge model) and a part-solid one's core is its own shape eroded to 0.35-0.6 of its depth.
    """
    zc, yc, xc = axes
    mask = np.zeros(grid.shape, np.uint8)
    for nd in nodules:
        r = nd.diameter_mm / 2
        if nd.shape is not None:
            real = (library or ps.library()).shape(nd.shape)
            scale = nd.diameter_mm / real.row.diameter_mm
            pad = np.array([real.radius_xy_mm, real.radius_xy_mm, real.half_z_mm]) * scale + 2.5
        else:
            real = None
            shape = _shape(rng, nd.type)
            pad = r * (1 + np.abs(shape[2]).sum()) + 2.5
        bx = grid.box(nd.center - pad, nd.center + pad)
        if bx is None:
            continue
        Z = zc[bx[0]][:, None, None] - nd.center[2]
        Y = yc[bx[1]][None, :, None] - nd.center[1]
        X = xc[bx[2]][None, None, :] - nd.center[0]
        ggo_like = nd.type in ("ground-glass", "part-solid")
        if real is None:
            dist = np.sqrt(X * X + Y * Y + Z * Z)
            occ = _occupancy(X, Y, Z, dist, r, shape, 1.2 if ggo_like else 0.45)
        else:
            occ, sdf = ps.occupancy(real, X, Y, Z, nd.diameter_mm, nd.pose, grid.spacing,
                                    1.2 if ggo_like else 0.45)
        occ = (occ * lung[bx]).astype(np.float32)
        t = tex[bx]
        if ggo_like:
            val = rng.uniform(-680, -380) + 35.0 * t
        elif nd.type == "calcified":
            val = rng.uniform(450, 1100) + 30.0 * t
        else:
            val = rng.uniform(0, 90) + 12.0 * t
        sub = hu[bx]
        sub[...] = sub * (1 - occ) + val * occ
        if nd.type == "part-solid" and real is None:
            rc = min(max(2.0, r * rng.uniform(0.35, 0.6)), 0.75 * r)
            core = _occupancy(X, Y, Z, dist, rc, _shape(rng, "calcified"), 0.45) * lung[bx]
            sub[...] = sub * (1 - core) + (rng.uniform(0, 80) + 12.0 * t) * core
        elif nd.type == "part-solid":  # the shape eroded to its deepest 0.35-0.6
            depth = float(np.max(-sdf)) if np.isfinite(sdf).all() else r
            rc = min(max(2.0, depth * rng.uniform(0.35, 0.6)), 0.75 * depth)
            core = np.clip((-sdf - (depth - rc)) / 0.45 + 0.5, 0.0, 1.0) * lung[bx]
            sub[...] = sub * (1 - core) + (rng.uniform(0, 80) + 12.0 * t) * core
        m = mask[bx]
        m[(occ >= 0.5) & (m == 0)] = nd.label
    return mask


def sample_distractors(
    rng,
    a: pa.Anatomy,
    depth: LungDepth,
    vessels: np.ndarray,
    branches: np.ndarray,
    nodules: list[Nodule],
) -> tuple[np.ndarray, np.ndarray]:
    """Non-nodule candidate points (patient xyz) and their kind ids, as a CAD system proposes.

    Kinds: 0 vessel branch point (r >= 1 mm), 1 vessel crossing (segments of different trees
    closer than the sum of their radii), 2 random parenchyma point, 3 juxta-pleural spot
    (0.5-2.5 mm below the pleura).  Points within a finding's radius + 2 mm are dropped.
    """
    pts, kinds = [], []
    inl = branches[(depth.at(branches[:, :3]) > 1.0)] if len(branches) else branches
    if len(inl):
        pick = rng.permutation(len(inl))[:15]
        pts.append(inl[pick, :3])
        kinds += [0] * len(pick)
    ves = vessels[vessels[:, 8] >= 0]
    if len(ves) > 1:
        tt = np.linspace(0, 1, 5)
        sp = (
            ves[:, None, 0:3] + tt[None, :, None] * (ves[:, None, 3:6] - ves[:, None, 0:3])
        ).reshape(-1, 3)
        rad = np.repeat((ves[:, 6] + ves[:, 7]) / 2, 5)
        tree = np.repeat(ves[:, 8], 5)
        prs = cKDTree(sp).query_pairs(r=2.0 * float(rad.max()) + 0.5, output_type="ndarray")
        if len(prs):
            i, j = prs[:, 0], prs[:, 1]
            dd = np.linalg.norm(sp[i] - sp[j], axis=1)
            ok = (
                (tree[i] != tree[j])
                & (dd <= rad[i] + rad[j] + 0.5)
                & (np.minimum(rad[i], rad[j]) >= 0.6)
            )
            cross = (sp[i[ok]] + sp[j[ok]]) / 2
            cross = cross[depth.at(cross) > 1.0] if len(cross) else cross
            if len(cross):
                pick = rng.permutation(len(cross))[:10]
                pts.append(cross[pick])
                kinds += [1] * len(pick)
    for kind, lo, hi, n in ((2, 3.0, 1e9, 10), (3, 0.5, 2.5, 8)):
        q = depth.sample(rng, lo, hi, n)
        if q is not None:
            pts.append(q)
            kinds += [kind] * n
    if not pts:
        return np.zeros((0, 3)), np.zeros(0, int)
    pts = np.concatenate(pts)
    kinds = np.array(kinds)
    keep = np.ones(len(pts), bool)
    for nd in nodules:
        keep &= np.linalg.norm(pts - nd.center, axis=1) > nd.diameter_mm / 2 + 2.0
    return pts[keep], kinds[keep]
