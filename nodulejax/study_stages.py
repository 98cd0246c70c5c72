"""The stages of the study after data preparation (see nodulejax/study.py for the order).

Each ``stage_*`` takes the :class:`nodulejax.study.Study` and returns a JSON-able summary that
the study stores in ``WORKDIR/stages/<stage>.json`` and the report reads back.
"""

from __future__ import annotations

import copy
import os

from configs.experiments import EXPERIMENTS, apply_experiment
from nodulejax.errors import ConfigError

# the Table 3 rows, in the paper's order (configs/experiments.py is the one list of them)
ALL_FPR = tuple(EXPERIMENTS)
BASELINES = tuple(n for n, r in EXPERIMENTS.items() if r["stage"] != "fpr_augmented")
AUGMENTED = tuple(n for n, r in EXPERIMENTS.items() if r["stage"] == "fpr_augmented")
ATTACK_TARGET = "baseline-beta-finetune"  # the model the paper attacks (Section 4)


def experiment_config(config, name: str):
    """A copy of ``config`` set up for the Table 3 row ``name``."""
    return apply_experiment(copy.deepcopy(config), name)


def fpr_model_name(name: str) -> str:
    """Checkpoint name of a Table 3 row (``beta+syn (random)`` -> ``fpr_beta+syn-random``)."""
    from nodulejax.train.fpr import model_name

    return model_name(name)


def _rows(study):
    only = tuple(getattr(study.config.train, "rows", ()) or ())
    return [r for r in ALL_FPR if not only or r in only or r in BASELINES]


# ---------------------------------------------------------------------------- training
def stage_cg(study):
    from nodulejax.train.cg import train_cg

    train_cg(study.config, study.workdir, study.scans("train"), study.scans("val"))
    return {"models": ["cg", "cg_ggo", "rpn"]}


def stage_fpr_seg(study):
    from nodulejax.train.fpr import train_fpr_seg

    train_fpr_seg(study.config, study.workdir, study.scans("train"))
    return {"model": "fpr_seg"}


def _test_auc(study, name, cfg):
    from nodulejax import checkpoint
    from nodulejax.train.fpr import evaluate_fpr

    params = checkpoint.load_params(study.workdir, fpr_model_name(name), which="best")
    return evaluate_fpr(params, cfg, study.scans("test"))


def _train_rows(study, rows, **kw):
    from nodulejax.train.fpr import train_fpr_experiment

    out = {}
    for name in rows:
        cfg = experiment_config(study.config, name)
        train_fpr_experiment(cfg, study.workdir, name, study.scans("train"), study.scans("val"),
                             **kw)
        out[name] = {k: float(v) for k, v in _test_auc(study, name, cfg).items()}
        print(f"[study] {name}: held-out test candidates {out[name]}", flush=True)
    return out


def stage_fpr_baselines(study):
    return {"test": _train_rows(study, BASELINES)}


def stage_synth(study):
    from nodulejax.train.synth import train_synth

    train_synth(study.config, study.workdir, study.scans("train"))
    return {"model": "synth"}


def stage_pool(study):
    from nodulejax.pool import build_pool

    cfg = experiment_config(study.config, ATTACK_TARGET)
    pool_dir = build_pool(cfg, study.workdir, study.scans("train"),
                          fpr_model_name=fpr_model_name(ATTACK_TARGET))
    return {"pool_dir": os.path.relpath(pool_dir, study.workdir)}


def stage_augmented(study):
    pool_dir = os.path.join(study.workdir, study.record("pool")["pool_dir"])
    rows = [r for r in _rows(study) if r in AUGMENTED]
    return {"test": _train_rows(study, rows, pool_dir=pool_dir)}


# ---------------------------------------------------------------------------- evaluation
def _eval_dir(study, *parts):
    path = os.path.join(study.workdir, "eval", *parts)
    os.makedirs(path, exist_ok=True)
    return path


def _test_seriesuids(study) -> str:
    """The evaluation's seriesuids file: every scan of the test folds (no header)."""
    path = os.path.join(_eval_dir(study), "seriesuids_test.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{s.uid}\n" for s in study.scans("test"))
    return path


def stage_detect(study):
    """Whole-scan CG on the test scans (candidates cached once), each FPR model scores them:
    one LUNA16 submission CSV per Table 3 row in WORKDIR/eval/predictions/."""
    from nodulejax import checkpoint
    from nodulejax.detect_cli import detect_scans, load_cg_params, write_rows

    out_dir = _eval_dir(study, "predictions")
    scans = study.scans("test")
    cache = os.path.join(study.workdir, "candidates")
    cg_params = load_cg_params(study.workdir)
    _, info = detect_scans(study.config, scans, cg_params=cg_params, cache_dir=cache)
    out = {"candidate_sensitivity": info["sensitivity"],
           "mean_candidates": info["candidates_per_scan"], "candidates": info, "models": {}}
    for name in _rows(study):
        cfg = experiment_config(study.config, name)
        params = checkpoint.load_params(study.workdir, fpr_model_name(name), which="best")
        rows, info = detect_scans(cfg, scans, fpr_params=params, cache_dir=cache)
        write_rows(os.path.join(out_dir, f"{name}.csv"), rows)
        out["models"][name] = {"marks": len(rows), "seconds_per_scan": info["seconds_per_scan"]}
    return out


def stage_evaluate(study):
    from nodulejax.evaluation import froc, table3

    root = study.data_root
    ann = os.path.join(root, "annotations.csv")
    exc = os.path.join(root, "annotations_excluded.csv")
    uids = _test_seriesuids(study)
    results = {}
    run_dirs = []
    for name in _rows(study):
        pred = os.path.join(_eval_dir(study, "predictions"), f"{name}.csv")
        res = froc.evaluate_files(ann, exc if os.path.exists(exc) else None, uids, pred,
                                  bootstrap=int(study.config.eval.bootstrap),
                                  seed=int(study.config.seed))
        res["name"] = name
        out = _eval_dir(study, "froc", name.replace(" ", "_"))
        froc.write_outputs(res, out, name)
        run_dirs.append(out)
        results[name] = {"cpm": res["cpm"], "cpm_ci": res["cpm_ci"],
                         "sensitivity_at": res["sensitivity_at"],
                         "n_nodules": res["n_nodules"], "n_detected": res["n_detected"]}
    md, _ = table3.assemble(run_dirs)
    with open(os.path.join(_eval_dir(study), "table3.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return {"froc": results}


def stage_stress(study):
    from nodulejax.stress import run_stress

    models = [fpr_model_name(n) for n in _rows(study) if n == ATTACK_TARGET or n in AUGMENTED]
    out_dir = _eval_dir(study, "stress")
    return run_stress(study.config, study.workdir, study.scans("test"), models, out_dir)


def stage_figures(study):
    """Figs. 5, 6, 8, 9: synthetic nodules before/after latent PGD, real vs PGD-synthetic
    nodules, PGD perturbations of a positive / noise / negative patch, noise levels (PNG)."""
    from nodulejax.figures import make_figures

    out = _eval_dir(study, "figures")
    paths = make_figures(study.config, study.workdir, study.scans("test"), out)
    return {"figures": [os.path.relpath(p, study.workdir) for p in paths]}


def stage_toy(study):
    from nodulejax.toy import run_toy

    t = study.config.toy
    out = _eval_dir(study, "toy")
    return run_toy(out, int(study.config.seed), mlp_steps=int(t.mlp_steps),
                   vae_steps=int(t.vae_steps))


def stage_report(study):
    from nodulejax.report import write_report

    path = write_report(study)
    return {"report": os.path.relpath(path, study.workdir)}


def run_single(study, stage: str):
    """``--config.stage=NAME`` for the per-model stage names of issue 5."""
    cfg = study.config
    if stage in ("fpr", "fpr_finetune", "fpr_augmented"):
        name = cfg.train.experiment
        kw = {}
        if stage == "fpr_augmented" and cfg.train.aug_source == "pool":
            kw["pool_dir"] = os.path.join(study.workdir, study.record("pool")["pool_dir"])
        return study.run_stage(f"{stage}_{name}", lambda: {"test": _train_rows(study, [name],
                                                                                **kw)})
    if stage == "fpr_seg_pretrain":
        return study.run_stage("fpr_seg", lambda: stage_fpr_seg(study))
    from nodulejax.study import STUDY_STAGES

    names = ", ".join(STUDY_STAGES + ("fpr_seg_pretrain", "fpr_finetune", "fpr_augmented"))
    raise ConfigError(f"config.stage: unknown stage {stage!r}; expected 'study' or one of "
                      f"{names}")
