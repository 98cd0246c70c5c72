"""Pictures and the report of ``python -m nodulejax.detection detect``.

Images show the prepared scan (isotropic, HU window of the model), turned to the radiological
view whatever the file's direction matrix: axial slices with the patient's front at the top
and the patient's left on the right, coronal and sagittal slices with the head at the top.

* :func:`finding_png`: axial, coronal and sagittal slices through one finding, a box of
  its estimated diameter (at least 10 mm) and its probability;
* :func:`overview_png`: a coronal maximum intensity projection of the lung mask (of the
  whole scan when no lung was found) with every finding marked by its rank;
* :func:`write_report`: ``report.md`` listing the findings in order of probability.
"""

from __future__ import annotations

import os

import numpy as np

from nodulejax.runtime.files import atomic_write_text

MIN_BOX_MM = 10.0
LUNG_MIP_MAX = 0.8  # the MIP of the lungs shows [-1000, 120] HU of the default window


def _flips(direction) -> tuple[bool, bool, bool]:
    """Per array axis (z, y, x): whether it runs against LPS (+z head, +y back, +x left)."""
    d = np.asarray(direction, np.float64)
    out = []
    for a in range(3):
        col = d[:, 2 - a]  # ITK index axis of array axis a
        out.append(bool(col[int(np.argmax(np.abs(col)))] < 0))
    return tuple(out)


def _oriented(image, direction, zyx):
    """``image`` (z, y, x) flipped to LPS order and ``zyx`` (N, 3) moved with it."""
    img = image
    fl = _flips(direction)
    for a in range(3):
        if fl[a]:
            img = np.flip(img, a)
    c = np.array(zyx, np.float64).reshape(-1, 3).copy()
    for a in range(3):
        if fl[a]:
            c[:, a] = image.shape[a] - 1 - c[:, a]
    return img, c


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def finding_png(f, i: int, rank: int, path: str) -> None:
    """Three slices through finding ``i`` of ``f`` (``scan.Findings``) with a box and its score."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    img, c = _oriented(f.scan.image, f.scan.geometry.direction, f.zyx[i])
    z, y, x = (int(round(v)) for v in np.clip(c[0], 0, np.asarray(img.shape) - 1))
    sp = f.scan.spacing
    half = max(float(f.diameter_mm[i]), MIN_BOX_MM) / sp / 2.0 + 1.0
    panels = [("axial", img[z], (c[0, 2], c[0, 1]), "upper"),
              ("coronal", img[:, y, :], (c[0, 2], c[0, 0]), "lower"),
              ("sagittal", img[:, :, x], (c[0, 1], c[0, 0]), "lower")]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9), dpi=80)
    for ax, (name, sl, (u, v), origin) in zip(axes, panels, strict=True):
        ax.imshow(sl, cmap="gray", vmin=0.0, vmax=1.0, origin=origin, interpolation="nearest")
        ax.add_patch(Rectangle((u - half, v - half), 2 * half, 2 * half, fill=False,
                               edgecolor="yellow", linewidth=1.2))
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    xw, yw, zw = f.world[i]
    fig.suptitle(f"#{rank}  p = {f.probability[i]:.3f}  ({f.source[i]}, ~{f.diameter_mm[i]:.0f}"
                 f" mm)  at x {xw:.1f}, y {yw:.1f}, z {zw:.1f} mm (LPS)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def overview_png(f, rows, path: str, threshold: float) -> None:
    """Coronal MIP of the lungs (the whole scan when no lung was found) with the findings."""
    plt = _plt()
    scan = f.scan
    vol = scan.image
    vmax = 1.0
    if scan.lung is not None and scan.lung.any():
        vol = np.where(scan.lung, vol, 0.0)
        vmax = LUNG_MIP_MAX
    img, c = _oriented(vol, scan.geometry.direction,
                       f.zyx[list(rows)] if len(rows) else np.zeros((0, 3)))
    mip = img.max(axis=1)  # (z, x)
    fig, ax = plt.subplots(figsize=(6.0, 6.0 * mip.shape[0] / max(mip.shape[1], 1) + 0.6),
                           dpi=80)
    ax.imshow(mip, cmap="gray", vmin=0.0, vmax=vmax, origin="lower", interpolation="nearest")
    cmap = plt.get_cmap("autumn_r")
    for rank, (i, cc) in enumerate(zip(rows, c, strict=True), start=1):
        p = float(f.probability[i])
        r = min(max(float(f.diameter_mm[i]), MIN_BOX_MM), 2 * MIN_BOX_MM) / scan.spacing / 2 + 2
        ax.add_patch(plt.Circle((cc[2], cc[0]), r, fill=False, color=cmap(p), linewidth=1.5))
        ax.text(cc[2] + r + 1, cc[0] + r + 1, str(rank), color=cmap(p), fontsize=9)
    uid = f.uid if len(f.uid) <= 24 else "..." + f.uid[-21:]
    ax.set_title(f"{uid}: {len(rows)} finding(s), p >= {threshold:.3g}", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(path: str, f, rows, pngs, s: dict) -> None:
    """report.md: the scan, the model and threshold, the overview and every finding."""
    lines = [f"# Nodule detection: {f.uid}", "",
             f"- scan: `{s['scan']}` ({' x '.join(map(str, s['shape']))} voxels, z y x), "
             f"prepared at {s['spacing_mm']:g} mm: {' x '.join(map(str, s['prepared_shape']))}",
             f"- model: `{s['model']}` (FPR `{s['fpr_model']}`, digest {s['model_digest'][:16]})",
             f"- threshold {s['threshold']:.4g}: {s['threshold_rule']}",
             f"- {s['n_findings']} finding(s) at or above it, of {s['n_candidates']} scored "
             f"candidates (all in `candidates.csv`)",
             f"- {s['seconds_per_scan']:.1f} s for the scan", "",
             "Coordinates: world LPS mm (`coordX, coordY, coordZ`, as LUNA16's CSVs) and the "
             "original file's voxel indices (i, j, k); the diameter is an estimate from the "
             "image. Research code, not a medical device.", "",
             "![overview](overview.png)", ""]
    if len(rows):
        lines += ["| # | probability | source | coordX, coordY, coordZ (mm) | voxel (i, j, k) "
                  "| diameter | image |", "|---|---|---|---|---|---|---|"]
        for rank, (i, png) in enumerate(zip(rows, pngs, strict=True), start=1):
            ijk = ", ".join(str(int(v)) for v in np.round(f.voxel[i][::-1]))
            where = f" `{f.file[i]}`" if f.file[i] else ""
            lines.append(f"| {rank} | {f.probability[i]:.4f} | {f.source[i]} | "
                         + ", ".join(f"{v:.1f}" for v in f.world[i])
                         + f" | {ijk}{where} | ~{f.diameter_mm[i]:.0f} mm | [{png}]({png}) |")
        lines.append("")
        for rank, (i, png) in enumerate(zip(rows, pngs, strict=True), start=1):
            lines += [f"## {rank}. p = {f.probability[i]:.4f}", "", f"![finding {rank}]({png})",
                      ""]
    else:
        lines += ["No finding at or above the threshold.", ""]
    atomic_write_text(os.fspath(path), "\n".join(lines))
