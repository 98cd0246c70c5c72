"""Figure: the phantom's nodule shapes, LIDC-IDRI readers' outlines next to the primitives.

    python analysis/nodule_shapes.py [--out docs/images/lidc_vs_primitives.png]
        [--diameters 5,8,12,16,22,28] [--spacing 0.5] [--seed 0]

For each diameter (mm), one nodule of each shape model of ``config.data.phantom.shapes``,
drawn by the phantom's own occupancy functions on an isotropic grid of ``--spacing`` mm:

* "primitives": a sphere whose radius varies with a few zonal harmonics
  (``nodulejax.data.phantom.nodules._shape`` / ``_occupancy``, type "solid", so a quarter of
  them get the spiculated / lobulated margin terms);
* "lidc": a real nodule of the library (``nodulejax/data/phantom/lidc_shapes.npz``: the
  LIDC-IDRI readers' consensus masks, :mod:`nodulejax.data.phantom.shapes`) chosen near the
  diameter by ``ShapeLibrary.choose``, scaled to it and turned by a random ``pose``, as
  ``render_nodules`` plants it; the title gives its type (from the readers' texture and
  calcification ratings) and its LIDC seriesuid's last digits.

Each column shows the axial (z) and coronal (y) slice through the nodule's centre: occupancy
in [0, 1] (the phantom's edge model, 0.45 mm for solid, 1.2 mm for ground-glass / part-solid;
a voxel belongs to the mask where it is >= 0.5). Intensities are not drawn (the phantom's
model per type is the same for both shape models). Prints one JSON line per nodule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nodulejax.data.phantom import nodules as pn  # noqa: E402
from nodulejax.data.phantom import shapes as ps  # noqa: E402


def _box(diameter_mm: float, spacing: float):
    """Offsets (mm) of a cube grid of side 1.6 diameters + 3 mm: ``Z (n,1,1), Y, X``."""
    half = 0.8 * diameter_mm + 1.5
    t = np.arange(-half, half + 1e-9, spacing)
    return t[:, None, None], t[None, :, None], t[None, None, :]


def primitive(rng, diameter_mm: float, spacing: float) -> np.ndarray:
    """Occupancy ``(n, n, n)`` of a solid primitive nodule of ``diameter_mm``."""
    Z, Y, X = _box(diameter_mm, spacing)
    X, Y, Z = np.broadcast_arrays(X, Y, Z)
    dist = np.sqrt(X * X + Y * Y + Z * Z)
    return pn._occupancy(X, Y, Z, dist, diameter_mm / 2, pn._shape(rng, "solid"), 0.45)


def real(rng, library: ps.ShapeLibrary, diameter_mm: float, spacing: float):
    """Occupancy ``(n, n, n)`` of a library nodule near ``diameter_mm`` and its index row."""
    i = library.choose(rng, diameter_mm)
    shape = library.shape(i)
    ggo_like = shape.row.type in ("ground-glass", "part-solid")
    Z, Y, X = _box(diameter_mm, spacing)
    occ, _ = ps.occupancy(shape, X, Y, Z, diameter_mm, ps.pose(rng), (spacing,) * 3,
                          1.2 if ggo_like else 0.45)
    return occ, shape.row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/images/lidc_vs_primitives.png")
    ap.add_argument("--diameters", default="5,8,12,16,22,28")
    ap.add_argument("--spacing", type=float, default=0.5, help="grid spacing (mm)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diams = [float(v) for v in a.diameters.split(",")]
    rng = np.random.default_rng(a.seed)
    library = ps.library()
    fig, ax = plt.subplots(4, len(diams), figsize=(2.0 * len(diams), 8.4))
    ax = np.asarray(ax).reshape(4, len(diams))
    for j, d in enumerate(diams):
        prim = primitive(rng, d, a.spacing)
        occ, row = real(rng, library, d, a.spacing)
        for k, (vol, label) in enumerate(((prim, "primitive"), (occ, "LIDC outline"))):
            c = vol.shape[0] // 2
            for m, (img, plane) in enumerate(((vol[c], "axial"), (vol[:, c], "coronal"))):
                axis = ax[2 * k + m, j]
                half = vol.shape[0] * a.spacing / 2
                axis.imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower",
                            extent=(-half, half, -half, half))
                axis.set_xticks([])
                axis.set_yticks([])
                if j == 0:
                    axis.set_ylabel(f"{label}\n{plane}", fontsize=9)
            voxels = int((vol >= 0.5).sum())
            print(json.dumps({"diameter_mm": d, "model": label,
                              "type": "solid" if k == 0 else row.type,
                              "lidc": None if k == 0 else row.key,
                              "equivalent_diameter_mm": round(
                                  (6 * voxels * a.spacing ** 3 / np.pi) ** (1 / 3), 2)}))
        ax[0, j].set_title(f"{d:g} mm", fontsize=10)
        ax[2, j].set_title(f"{row.type}, ...{row.seriesuid[-6:]}", fontsize=8)
    fig.suptitle("Phantom nodule shapes: geometric primitives (rows 1-2) and LIDC-IDRI "
                 "readers' consensus outlines (rows 3-4)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(json.dumps({"figure": a.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
