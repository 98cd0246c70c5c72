"""Whole-scan detection CLI: candidates (cached) scored by a trained FPR -> LUNA16 CSV.

    python -m nodulejax.detection --config configs/demo.py --workdir runs/demo \
        --data runs/demo/data --out predictions.csv [--folds 8,9] [--fpr-model NAME]

CG params come from ``WORKDIR/checkpoints/{cg,cg_ggo,rpn}`` and the FPR params from
``WORKDIR/checkpoints/<NAME>``. ``--fpr-model none`` writes the CG scores instead (the
candidate stage alone). The candidate-stage sensitivity (Section 5.2) is printed and written
to ``WORKDIR/candidates/sensitivity.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from nodulejax.data import luna16
from nodulejax.data.prepare import prepare_folds
from nodulejax.detection.run import detect_scans, load_cg_params, write_rows
from nodulejax.runtime.checkpoint import load_params
from nodulejax.runtime.config_tools import load_config
from nodulejax.runtime.files import atomic_write_json


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m nodulejax.detection", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--data", required=True, help="dataset folder in the LUNA16 layout")
    ap.add_argument("--out", required=True, help="submission CSV to write")
    ap.add_argument("--folds", default=None, help="comma-separated subsets (default: "
                    "config.data.test_folds)")
    ap.add_argument("--fpr-model", default=None, help="checkpoint name of the FPR model "
                    "(default fpr_<config.train.experiment>; 'none' = CG scores)")
    ap.add_argument("--no-rpn", action="store_true", help="blob candidates only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    config = load_config(args.config)
    folds = (tuple(int(f) for f in args.folds.split(",")) if args.folds
             else tuple(config.data.test_folds))
    ds = luna16.Luna16Dataset(args.data)
    scans = prepare_folds(ds, folds, spacing=float(config.data.spacing),
                          window=tuple(config.data.hu_window),
                          cache_dir=os.path.join(args.workdir, "prepared"))
    cache_dir = os.path.join(args.workdir, "candidates")
    os.makedirs(cache_dir, exist_ok=True)
    cg_params = load_cg_params(args.workdir, with_rpn=not args.no_rpn)
    name = args.fpr_model or f"fpr_{config.train.experiment}"
    fpr_params = None if name.lower() == "none" else load_params(args.workdir, name, "best")
    rows, info = detect_scans(config, scans, cg_params=cg_params, fpr_params=fpr_params,
                              cache_dir=cache_dir)
    write_rows(args.out, rows)
    info.update(out=args.out, fpr_model=name, folds=list(folds), n_rows=len(rows))
    atomic_write_json(os.path.join(cache_dir, "sensitivity.json"), info, indent=2)
    print(json.dumps(info))
    return info




if __name__ == "__main__":
    main()
