"""Whole-scan detection: candidates (cached) scored by a trained FPR -> LUNA16 CSV.

    python -m nodulejax.detection --config configs/demo.py --workdir runs/demo \
        [--data runs/demo/data] [--out pred.csv] [--folds 8,9] [--fpr-model beta+syn]

CG params come from WORKDIR/checkpoints/{cg,cg_ggo,rpn} and the FPR params from
WORKDIR/checkpoints/fpr_<ROW> (--fpr-model takes the Table 3 row, beta+syn, or the
checkpoint name, fpr_beta+syn; none writes the CG scores, the candidate stage alone). Scans
are prepared into the study's cache (WORKDIR/cache), candidates cached in WORKDIR/candidates;
the candidate-stage sensitivity (Section 5.2) is printed and written to
WORKDIR/candidates/sensitivity.json.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from nodulejax.data import luna16
from nodulejax.data.prepare import cache_dir, config_lidc_masks, data_root, prepare_folds
from nodulejax.detection.run import detect_scans, load_cg_params, write_rows
from nodulejax.errors import ConfigError
from nodulejax.experiments import file_name, row_config, row_of_model
from nodulejax.runtime.checkpoint import load_params, require_model
from nodulejax.runtime.cli import run_main
from nodulejax.runtime.files import atomic_write_json


def define(fv):
    flags.DEFINE_string("workdir", None, "run folder with the trained checkpoints",
                        flag_values=fv)
    flags.DEFINE_string("data", None, "dataset folder in the LUNA16 layout (default: "
                        "config.data.root or WORKDIR/data, as the study)", flag_values=fv)
    flags.DEFINE_string("out", None, "submission CSV to write (default: "
                        "WORKDIR/eval/predictions/<model>.csv)", flag_values=fv)
    flags.DEFINE_string("folds", None, "comma-separated subsets (default: "
                        "config.data.test_folds)", flag_values=fv)
    flags.DEFINE_string("fpr-model", None, "FPR model: a Table 3 row or checkpoint name "
                        "(default: config.train.experiment; 'none' = CG scores)",
                        flag_values=fv)
    flags.DEFINE_boolean("no-rpn", False, "blob candidates only", flag_values=fv)
    return ["workdir"]


def _folds(text, config):
    if not text:
        return tuple(int(f) for f in config.data.test_folds)
    try:
        return tuple(int(f) for f in text.split(","))
    except ValueError:
        raise ConfigError(f"--folds {text!r}: expected comma-separated subset numbers, "
                          "e.g. 8,9") from None


def _main(fv) -> int:
    config, workdir = fv["config"].value, fv["workdir"].value
    folds = _folds(fv["folds"].value, config)
    name = fv["fpr-model"].value or str(config.train.experiment)
    model = None if name.lower() == "none" else require_model(workdir, name)
    data = fv["data"].value or data_root(config, workdir)
    if not os.path.isdir(data):
        raise ConfigError(f"--data {data}: no such folder (a dataset in the LUNA16 layout; "
                          "default: config.data.root or WORKDIR/data)")
    ds = luna16.Luna16Dataset(data)
    stem = file_name(row_of_model(model)) if model and row_of_model(model) else model or "cg"
    out = fv["out"].value or os.path.join(workdir, "eval", "predictions", f"{stem}.csv")
    scans = prepare_folds(ds, list(folds), spacing=float(config.data.spacing),
                          window=tuple(config.data.hu_window), cache_dir=cache_dir(workdir),
                          workers=int(config.data.get("num_workers", 1)),
                          progress=bool(config.train.progress),
                          lidc_masks=config_lidc_masks(config))
    cands = os.path.join(workdir, "candidates")
    os.makedirs(cands, exist_ok=True)
    cg_params = load_cg_params(workdir, with_rpn=not fv["no-rpn"].value)
    fpr_params = None if model is None else load_params(workdir, model, "best")
    row = row_of_model(model) if model else None  # its head (CE / Beta) from Table 3
    rows, info = detect_scans(row_config(config, row) if row else config, scans,
                              cg_params=cg_params, fpr_params=fpr_params, cache_dir=cands)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_rows(out, rows)
    info.update(out=out, fpr_model=model or "none", folds=list(folds), n_rows=len(rows))
    atomic_write_json(os.path.join(cands, "sensitivity.json"), info, indent=2)
    print(json.dumps(info))
    return 0


def main(argv=None) -> int:
    """``python -m nodulejax.detection``: exit code (``argv``: the arguments after it)."""
    return run_main("python -m nodulejax.detection", define, _main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
