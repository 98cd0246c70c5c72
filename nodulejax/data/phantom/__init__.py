"""Synthetic low-dose chest-CT phantom in the LUNA16 layout (``python -m nodulejax.data.phantom``).

`anatomy` draws the lungs, vessels and airways, `body` the body wall, ribs and spine, `nodules`
the four nodule types and the distractors, `shapes` the real nodule shapes (LIDC-IDRI consensus
outlines, ``shapes="lidc"``); `generate` assembles scans and writes the LUNA16 folder
(``subset*/<uid>.mhd``, ``annotations.csv``, ``candidates.csv``, ...).
"""

from nodulejax.data.phantom.generate import (
    DEFAULT_MAX_VOXELS,
    DEFAULT_SIZE_SCALE,
    DISTRACTOR_KINDS,
    UID_PREFIX,
    Geometry,
    Scan,
    generate_dataset,
    generate_scan,
    make_uid,
    plot_scan_summary,
    prepare_out_dir,
    scan_seed,
    write_mhd,
)

__all__ = ["DEFAULT_MAX_VOXELS", "DEFAULT_SIZE_SCALE", "UID_PREFIX", "DISTRACTOR_KINDS",
           "Geometry", "Scan", "generate_dataset", "generate_scan",
           "make_uid", "plot_scan_summary", "prepare_out_dir", "scan_seed", "write_mhd"]
