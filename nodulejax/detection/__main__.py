"""Whole-scan detection: candidates (cached) scored by a trained FPR -> LUNA16 CSV.

    python -m nodulejax.detection --config configs/demo.py --workdir runs/demo \
        [--data runs/demo/data] [--out pred.csv] [--folds 8,9] [--fpr-model beta+syn]

Two subcommands run a trained detector on one's own scan (``--help`` after each):

    python -m nodulejax.detection export --workdir runs/demo [--fpr-model beta+syn] \
        --out MODEL_DIR
    python -m nodulejax.detection detect --model MODEL_DIR --scan PATH [--out DIR]

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
from nodulejax.detection.export import DEFAULT_THRESHOLD, export_model, load_model
from nodulejax.detection.run import detect_scans, load_cg_params, write_rows
from nodulejax.detection.scan import detect_file
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


EXPORT_DOC = """Export a trained detector as one self-contained folder.

    python -m nodulejax.detection export --workdir runs/demo [--fpr-model beta+syn] \
        --out MODEL_DIR

MODEL_DIR holds the CG, GGO, RPN and FPR params (Orbax), detector.json (the config fields
detection reads, the package version, the default threshold and the run's measured CPM),
model.md (training data, config, CPM) and manifest.json (sha256 of every file and their
digest). `detect --model MODEL_DIR` needs nothing else. The default threshold is the FPR
probability at 1 FP/scan on the run's test FROC when its froc.json records the curve's
thresholds, else 0.5.
"""

DETECT_DOC = f"""Detect nodules in one CT scan with an exported detector.

    python -m nodulejax.detection detect --model MODEL_DIR --scan PATH [--out DIR]

PATH: a .mhd/.mha, a .nii/.nii.gz or a DICOM series folder (--series UID picks one of
several series). The scan is prepared as the study prepares its scans (resampled to the
model's spacing, HU window, lung mask) and run through the study's detector. DIR (default
./<scan name>_nodules) receives detections.csv (world LPS mm coordX/Y/Z as LUNA16, the
original file's voxel indices, probability, source blob/GGO/RPN, estimated diameter),
candidates.csv (every scored candidate), finding_NN.png (axial/coronal/sagittal slices),
overview.png (coronal MIP of the lungs) and report.md. Default threshold: the model's (the
FPR probability at 1 FP/scan on its run's test FROC when recorded, else {DEFAULT_THRESHOLD};
detector.json and the report state which). A refused input writes nothing.
"""


def define_export(fv):
    flags.DEFINE_string("workdir", None, "finished run folder (checkpoints/cg, cg_ggo, rpn, "
                        "fpr_<row>)", flag_values=fv)
    flags.DEFINE_string("out", None, "model folder to write", flag_values=fv)
    flags.DEFINE_string("fpr-model", None, "FPR model: a Table 3 row or checkpoint name "
                        "(default: the run's config.train.experiment)", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "replace --out if it exists", flag_values=fv)
    return ["workdir", "out"]


def _export(fv) -> int:
    info = export_model(fv["workdir"].value, fv["out"].value, fv["fpr-model"].value,
                        overwrite=fv["overwrite"].value)
    m = info["measured"]
    cpm = f"CPM {m['cpm']:.3f}" if m.get("cpm") is not None else "no measured CPM"
    print(f"exported {info['fpr_model']} + cg, cg_ggo, rpn to {info['out']} ({cpm}; threshold "
          f"{info['threshold']['value']:.4g}; digest {info['digest']})", flush=True)
    return 0


def define_detect(fv):
    flags.DEFINE_string("model", None, "exported model folder (detection export --out)",
                        flag_values=fv)
    flags.DEFINE_string("scan", None, "a .mhd/.mha, .nii/.nii.gz or a DICOM series folder",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "output folder (default: ./<scan name>_nodules)",
                        flag_values=fv)
    flags.DEFINE_string("series", None, "SeriesInstanceUID to read when the DICOM folder "
                        "holds several series", flag_values=fv)
    flags.DEFINE_float("threshold", None, "report findings with probability >= this "
                       "(default: the model's: the probability at 1 FP/scan on its run's test "
                       f"FROC when recorded, else {DEFAULT_THRESHOLD})", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "replace --out if it exists", flag_values=fv)
    flags.DEFINE_boolean("progress", True, "a progress bar per stage on stderr",
                         flag_values=fv)
    return ["model", "scan"]


def _detect(fv) -> int:
    model = load_model(fv["model"].value)
    s = detect_file(model, fv["scan"].value, fv["out"].value, series=fv["series"].value,
                    threshold=fv["threshold"].value, overwrite=fv["overwrite"].value,
                    progress=fv["progress"].value)
    print(f"{s['n_findings']} finding(s) of {s['n_candidates']} candidates at or above the "
          f"threshold {s['threshold']:.4g} ({s['threshold_rule']}); {s['out']}/report.md",
          flush=True)
    print(f"time per scan: {s['seconds_per_scan']:.1f} s", flush=True)
    return 0


SUBCOMMANDS = {"export": (define_export, _export, EXPORT_DOC),
               "detect": (define_detect, _detect, DETECT_DOC)}


def main(argv=None) -> int:
    """``python -m nodulejax.detection [export|detect]``: exit code (``argv``: the arguments
    after it)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in SUBCOMMANDS:
        define_fn, main_fn, doc = SUBCOMMANDS[args[0]]
        return run_main(f"python -m nodulejax.detection {args[0]}", define_fn, main_fn,
                        args[1:], doc=doc, config=None)
    return run_main("python -m nodulejax.detection", define, _main, args, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
