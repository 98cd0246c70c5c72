"""Phantom nodule density: included test nodules of a config and the per-scan cost.

    python analysis/phantom_density.py [--config configs/demo.py] [--densities 0,8,12]
        [--cost-scans 4]

For each ``data.phantom.nodules_per_scan`` value: the included (consensus) nodules of the
config's test folds, in total and at >= 4 mm / >= 6 mm (each scan is a pure function of
``(data.phantom.seed, i)``, so only the test scans are generated), then the CPU seconds
(``time.process_time``: robust on a shared, loaded machine) of phantom generation and of
``prepare`` (resample, window, lung mask) per scan on the first ``--cost-scans`` test scans.
Prints one JSON line per density.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nodulejax.data.luna16 import Luna16Dataset  # noqa: E402
from nodulejax.data.phantom import generate  # noqa: E402
from nodulejax.data.phantom.generate import generate_dataset  # noqa: E402
from nodulejax.data.prepare import prepare_scan  # noqa: E402
from nodulejax.runtime.config_tools import load_config  # noqa: E402


def test_nodules(c, density: float) -> dict:
    p, folds = c.data.phantom, set(c.data.test_folds)
    idx = [i for i in range(int(p.num_scans)) if i % int(p.num_subsets) in folds]
    d = []
    for i in idx:
        sc = generate.generate_scan(generate.scan_seed(int(p.seed), i),
                                    size_scale=float(p.size_scale),
                                    max_voxels=int(p.max_voxels), nodules_per_scan=density)
        d += [n.diameter_mm for n in sc.nodules if not n.excluded]
    d = np.array(d)
    return {"test_scans": len(idx), "included": len(d), "ge4mm": int((d >= 4).sum()),
            "ge6mm": int((d >= 6).sum())}


def cost(c, density: float, n: int) -> dict:
    p = c.data.phantom
    with tempfile.TemporaryDirectory() as out:
        t = time.process_time()
        generate_dataset(out, n, int(p.seed) + 1, size_scale=float(p.size_scale),
                         num_subsets=1, max_voxels=int(p.max_voxels),
                         nodules_per_scan=density)  # workers=1: in this process
        gen = (time.process_time() - t) / n
        ds = Luna16Dataset(out)
        t = time.process_time()
        for uid in ds.uids():
            prepare_scan(ds, uid, spacing=float(c.data.spacing), window=tuple(c.data.hu_window))
        prep = (time.process_time() - t) / n
    return {"generate_cpu_s_per_scan": round(gen, 3), "prepare_cpu_s_per_scan": round(prep, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.py")
    ap.add_argument("--densities", default="0,8,12")
    ap.add_argument("--cost-scans", type=int, default=4)
    a = ap.parse_args(argv)
    c = load_config(a.config)
    for dens in (float(x) for x in a.densities.split(",")):
        row = {"nodules_per_scan": dens, **test_nodules(c, dens)}
        if a.cost_scans > 0:
            row.update(cost(c, dens, a.cost_scans))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
