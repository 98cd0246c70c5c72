"""``python -m nodulejax.data.phantom --out DIR --num-scans 20 --seed 0``: the phantom
writer's command line (see :mod:`nodulejax.data.phantom.generate`)."""

import sys

import numpy as np
from absl import flags

from nodulejax.data.phantom.generate import (
    DEFAULT_MAX_VOXELS,
    DEFAULT_SIZE_SCALE,
    generate_dataset,
)
from nodulejax.data.phantom.generate import __doc__ as _DOC
from nodulejax.data.phantom.shapes import SHAPES
from nodulejax.runtime.cli import run_main

_FLAGS = {  # flag -> (config.data.phantom field, built-in default, help)
    "num-scans": ("num_scans", 40, "scans to write"),
    "seed": ("seed", 0, "dataset seed (scan i uses SeedSequence([seed, i]))"),
    "size-scale": ("size_scale", DEFAULT_SIZE_SCALE, "anatomy scale (1.0 = adult chest)"),
    "num-subsets": ("num_subsets", 10, "LUNA16 subsets (scan i -> subset i % K)"),
    "max-voxels": ("max_voxels", DEFAULT_MAX_VOXELS, "voxels per scan before the spacing "
                   "is coarsened"),
    "nodules-per-scan": ("nodules_per_scan", 0.0, "expected consensus nodules per scan "
                         "(0: the built-in distribution, mean 1.83)"),
    "shapes": ("shapes", "primitives", "nodule shapes: geometric primitives or the LIDC-IDRI "
               "outlines of real nodules (which also decide the types)"),
}


def _define(fv):
    flags.DEFINE_string("out", None, "dataset folder to write (must be empty)", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "clear a previous phantom in --out first",
                         flag_values=fv)
    flags.DEFINE_integer("workers", 1, "generator processes", flag_values=fv)
    for name, (_, default, text) in _FLAGS.items():
        help_ = f"{text}; with --config: config.data.phantom"
        if isinstance(default, str):
            flags.DEFINE_enum(name, default, SHAPES, help_, flag_values=fv)
            continue
        define = flags.DEFINE_float if isinstance(default, float) else flags.DEFINE_integer
        define(name, default, help_, flag_values=fv)
    return ["out"]


def _main(fv) -> int:
    config = fv["config"].value
    opts = {}
    for name, (field, _, _) in _FLAGS.items():
        given = fv[name].present or config is None
        opts[field] = fv[name].value if given else config.data.phantom.get(field, fv[name].value)
    s = generate_dataset(fv["out"].value, int(opts["num_scans"]), int(opts["seed"]),
                         size_scale=float(opts["size_scale"]),
                         num_subsets=int(opts["num_subsets"]),
                         max_voxels=int(opts["max_voxels"]), verbose=True,
                         workers=int(fv["workers"].value), overwrite=fv["overwrite"].value,
                         nodules_per_scan=float(opts["nodules_per_scan"]),
                         shapes=str(opts["shapes"]))
    print(
        f"[phantom] wrote {s['num_scans']} scans, {s['num_nodules']} nodules, "
        f"{s['num_excluded']} excluded, {s['num_candidates']} candidates ({s['shapes']} "
        f"shapes) to {fv['out'].value}; "
        f"mean {np.mean(s['seconds']):.2f} s/scan, mean {np.mean(s['voxels']) / 1e6:.2f} M voxels"
    )
    return 0


def main(argv=None) -> int:
    """``python -m nodulejax.data.phantom``: exit code (0 = written)."""
    return run_main("python -m nodulejax.data.phantom", _define, _main, argv,
                    doc=_DOC, config="optional")


if __name__ == "__main__":
    sys.exit(main())
