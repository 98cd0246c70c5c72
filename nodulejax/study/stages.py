"""The stages of the study, in order: one table (``STUDY_STAGES``, ``STAGES``).

Each ``stage_*`` takes the :class:`nodulejax.study.context.Study` and returns a JSON-able
summary that the study stores in ``WORKDIR/stages/<stage>.json`` and the report reads back.
"""

from __future__ import annotations

import json
import os

import numpy as np

from nodulejax.adversarial.pool.build import build_pool
from nodulejax.data.patchsets import nodule_cutouts
from nodulejax.data.phantom.generate import generate_dataset, plot_scan_summary
from nodulejax.detection.run import detect_scans, load_cg_params, write_rows
from nodulejax.errors import ConfigError, nearest
from nodulejax.evaluation import froc, table3
from nodulejax.evaluation.figures import make_figures
from nodulejax.evaluation.stress import run_stress
from nodulejax.experiments import (
    ALL_ROWS,
    ATTACK_MODEL,
    ATTACK_TARGET,
    AUGMENTED,
    BASELINES,
    CG_MODELS,
    SEG_MODEL,
    SYNTH_MODEL,
    file_name,
    model_name,
    replica_name,
    row_config,
    split_replica,
)
from nodulejax.runtime import checkpoint
from nodulejax.runtime.files import atomic_write_json, atomic_write_text
from nodulejax.runtime.keys import stream_key
from nodulejax.study.claims import run_claims
from nodulejax.study.report import write_report
from nodulejax.study.toy import run_toy
from nodulejax.train.cg import train_cg
from nodulejax.train.fpr import evaluate_fpr, train_fpr_experiment, train_fpr_seg
from nodulejax.train.synth import synth_quality, train_synth


def _rows(study):
    only = tuple(getattr(study.config.train, "rows", ()) or ())
    return [r for r in ALL_ROWS if not only or r in only or r in BASELINES]


def finetune_seeds(config) -> int:
    """``config.train.finetune_seeds`` (>= 1): how many seeds each augmented fine-tune gets."""
    k = config.train.get("finetune_seeds", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"config.train.finetune_seeds={k!r}: expected an int >= 1 (seed "
                          "replicas of every augmented fine-tune)")
    return k


def _replicas(study, rows) -> list[str]:
    """Seed replicas k = 1 .. finetune_seeds - 1 of the augmented ``rows``
    (``experiments.replica_name``); replica 0 is the row itself."""
    k = finetune_seeds(study.config)
    return [replica_name(r, i) for r in rows if r in AUGMENTED for i in range(1, k)]


# ---------------------------------------------------------------------------- data
def stage_data(study):
    d = study.config.data
    if d.kind == "luna16":
        if not d.root:
            raise ConfigError("config.data.root: a LUNA16 folder is needed when "
                              "config.data.kind == 'luna16'")
        return {"root": d.root, "num_scans": len(study.dataset)}
    if d.kind != "phantom":
        raise ConfigError(f"config.data.kind: expected 'phantom' or 'luna16', got {d.kind!r}")
    p = d.phantom
    summary = generate_dataset(study.data_root, int(p.num_scans), int(p.seed),
                               size_scale=float(p.size_scale),
                               num_subsets=int(p.num_subsets),
                               max_voxels=int(p.max_voxels),
                               workers=int(d.num_workers),
                               nodules_per_scan=float(p.get("nodules_per_scan", 0.0)),
                               shapes=str(p.get("shapes", "primitives")),
                               overwrite=True)  # a killed earlier attempt
    summary.pop("uids", None)
    return summary

def stage_prepare(study):
    info = {}
    for split in ("train", "val", "test"):
        scans = study.scans(split)
        n_nod = sum(len(s.nodules_zyx) for s in scans)
        types, sources = {}, {}
        for s in scans:
            for t in s.nodule_types:
                types[t] = types.get(t, 0) + 1
            for m in (s.mask_source if s.mask_source is not None else ()):
                sources[str(m)] = sources.get(str(m), 0) + 1
        # mask_source: where the nodule masks came from (dataset / lidc / sphere; see
        # nodulejax.data.prepare)
        info[split] = {"scans": len(scans), "nodules": n_nod, "types": types,
                       "mask_source": sources,
                       "mean_shape": np.mean([s.image.shape for s in scans], 0).tolist()
                       if scans else None}
    report = os.path.join(study.workdir, "report")
    os.makedirs(report, exist_ok=True)
    uid = study.dataset.uids()[0]
    vol = study.dataset.load(uid)
    ann = study.dataset.annotations.for_uid(uid)
    rows = np.concatenate([ann.xyz, ann.diameter_mm[:, None]], 1) if len(ann) else []
    plot_scan_summary(vol, rows, os.path.join(report, "scan_summary.png"),
                      title=f"{uid} (native grid)")
    info["picture"] = "report/scan_summary.png"
    atomic_write_json(os.path.join(report, "dataset.json"), info, indent=1)
    return info


# ---------------------------------------------------------------------------- training
def stage_cg(study):
    train_cg(study.config, study.workdir, study.scans("train"), study.scans("val"))
    return {"models": ["cg", "cg_ggo", "rpn"]}


def stage_fpr_seg(study):
    train_fpr_seg(study.config, study.workdir, study.scans("train"))
    return {"model": "fpr_seg"}


def _test_auc(study, name, cfg):
    params = checkpoint.load_params(study.workdir, model_name(name), which="best")
    return evaluate_fpr(params, cfg, study.scans("test"), workdir=study.workdir)


def _train_rows(study, rows, **kw):
    out = {}
    for name in rows:
        cfg = row_config(study.config, split_replica(name)[0])
        train_fpr_experiment(cfg, study.workdir, name, study.scans("train"), study.scans("val"),
                             **kw)
        out[name] = {k: float(v) for k, v in _test_auc(study, name, cfg).items()}
        print(f"[study] {name}: held-out test candidates {out[name]}", flush=True)
    return out


def stage_fpr_baselines(study):
    return {"test": _train_rows(study, BASELINES)}


def stage_synth(study):
    c = study.config
    cut = nodule_cutouts(study.scans("train"), int(c.synth.patch_size),
                         min_diameter_mm=float(c.synth.get("train_min_diameter_mm", 0.0)))
    vae_params, _ = train_synth(c, study.workdir, study.scans("train"), cutouts=cut)
    quality = synth_quality(c, vae_params, cut, stream_key(int(c.seed), "synth/quality"))
    return {"model": "synth", "quality": quality}


def stage_pool(study):
    cfg = row_config(study.config, ATTACK_TARGET)
    pool_dir = build_pool(cfg, study.workdir, study.scans("train"),
                          fpr_model_name=ATTACK_MODEL)
    return {"pool_dir": os.path.relpath(pool_dir, study.workdir)}


def stage_augmented(study):
    pool_dir = os.path.join(study.workdir, study.record("pool")["pool_dir"])
    rows = [r for r in _rows(study) if r in AUGMENTED]
    return {"test": _train_rows(study, rows + _replicas(study, rows), pool_dir=pool_dir)}


# ---------------------------------------------------------------------------- evaluation
def _eval_dir(study, *parts):
    path = os.path.join(study.workdir, "eval", *parts)
    os.makedirs(path, exist_ok=True)
    return path


def _test_seriesuids(study) -> str:
    """The evaluation's seriesuids file: every scan of the test folds (no header)."""
    path = os.path.join(_eval_dir(study), "seriesuids_test.csv")
    atomic_write_text(path, "".join(f"{s.uid}\n" for s in study.scans("test")))
    return path


def stage_detect(study):
    """Whole-scan CG on the test scans (candidates cached once), each FPR model scores them:
    one LUNA16 submission CSV per Table 3 row in WORKDIR/eval/predictions/."""
    out_dir = _eval_dir(study, "predictions")
    scans = study.scans("test")
    cache = os.path.join(study.workdir, "candidates")
    cg_params = load_cg_params(study.workdir)
    _, info = detect_scans(study.config, scans, cg_params=cg_params, cache_dir=cache,
                           desc="candidates")
    out = {"candidate_sensitivity": info["sensitivity"],
           "mean_candidates": info["candidates_per_scan"], "candidates": info, "models": {}}
    for name in _rows(study):
        cfg = row_config(study.config, name)
        params = checkpoint.load_params(study.workdir, model_name(name), which="best")
        rows, info = detect_scans(cfg, scans, fpr_params=params, cache_dir=cache,
                                  desc=f"scoring {file_name(name)}")
        write_rows(os.path.join(out_dir, f"{file_name(name)}.csv"), rows)
        out["models"][name] = {"marks": len(rows), "seconds_per_scan": info["seconds_per_scan"]}
    return out


def stage_evaluate(study):
    root = study.data_root
    ann = os.path.join(root, "annotations.csv")
    exc = os.path.join(root, "annotations_excluded.csv")
    uids = _test_seriesuids(study)
    results = {}
    run_dirs = []
    for name in _rows(study):
        pred = os.path.join(_eval_dir(study, "predictions"), f"{file_name(name)}.csv")
        res = froc.evaluate_files(ann, exc if os.path.exists(exc) else None, uids, pred,
                                  bootstrap=int(study.config.eval.bootstrap),
                                  seed=int(study.config.seed),
                                  min_diameter_mm=float(study.config.eval.min_diameter_mm))
        res["name"] = name
        out = _eval_dir(study, "froc", file_name(name))
        froc.write_outputs(res, out, name)
        run_dirs.append(out)
        results[name] = {"cpm": res["cpm"], "cpm_ci": res["cpm_ci"],
                         "sensitivity_at": res["sensitivity_at"],
                         "n_nodules": res["n_nodules"], "n_detected": res["n_detected"]}
    md, _ = table3.assemble(run_dirs)
    atomic_write_text(os.path.join(_eval_dir(study), "table3.md"), md)
    return {"froc": results}


def stage_stress(study):
    """Tables 4-6 for the attack target and the augmented rows; their seed replicas are
    scored on the same transfer inputs (no white-box attacks, no curves)."""
    rows = [n for n in _rows(study) if n == ATTACK_TARGET or n in AUGMENTED]
    out_dir = _eval_dir(study, "stress")
    return run_stress(study.config, study.workdir, study.scans("test"),
                      [model_name(n) for n in rows], out_dir,
                      replicas=[model_name(n) for n in _replicas(study, rows)],
                      progress=bool(study.config.train.progress))


def stage_figures(study):
    """Figs. 5, 6, 8, 9: synthetic nodules before/after latent PGD, real vs PGD-synthetic
    nodules, PGD perturbations of a positive / noise / negative patch, noise levels (PNG)."""
    out = _eval_dir(study, "figures")
    paths = make_figures(study.config, study.workdir, study.scans("test"), out)
    return {"figures": [os.path.relpath(p, study.workdir) for p in paths]}


def stage_toy(study):
    t = study.config.toy
    out = _eval_dir(study, "toy")
    return run_toy(out, int(study.config.seed), mlp_steps=int(t.mlp_steps),
                   vae_steps=int(t.vae_steps))


def stage_claims(study):
    """Every Section 5 claim with a paired bootstrap CI -> WORKDIR/report/claims.json."""
    rows = list(study.record("evaluate").get("froc") or {}) if study.done("evaluate") else []
    path = run_claims(study.workdir, study.data_root, rows,
                      n_samples=int(study.config.eval.bootstrap), seed=int(study.config.seed),
                      min_diameter_mm=float(study.config.eval.get("min_diameter_mm", 0.0)),
                      finetune_seeds=finetune_seeds(study.config))
    with open(path) as f:
        verdicts = [c["verdict"] for c in json.load(f)]
    return {"claims": os.path.relpath(path, study.workdir),
            "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))}}


def stage_report(study):
    path = write_report(study)
    return {"report": os.path.relpath(path, study.workdir)}


def run_single(study, stage: str):
    """``--config.stage=NAME`` for one model: fpr / fpr_finetune / fpr_augmented of the row
    ``config.train.experiment``, or fpr_seg_pretrain."""
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
    names = STUDY_STAGES + SINGLE_STAGES
    raise ConfigError(f"config.stage: unknown stage {stage!r}; expected 'study' or one of "
                      f"{', '.join(names)}{nearest(stage, names)}")


STAGES = {
    "data": stage_data, "prepare": stage_prepare, "cg": stage_cg, "fpr_seg": stage_fpr_seg,
    "fpr": stage_fpr_baselines, "synth": stage_synth, "pool": stage_pool,
    "augmented": stage_augmented, "detect": stage_detect, "evaluate": stage_evaluate,
    "stress": stage_stress, "figures": stage_figures, "toy": stage_toy, "claims": stage_claims,
    "report": stage_report,
}
STUDY_STAGES = tuple(STAGES)  # the order of the whole study
SINGLE_STAGES = ("fpr_seg_pretrain", "fpr_finetune", "fpr_augmented")  # one Table 3 row

# The config fields each stage reads: fnmatch patterns on dotted paths, "!pattern" excludes.
# A stage's marker records them (nodulejax.study.plan); a re-run whose fields differ refuses.
_FPR_RUN = ("fpr.steps", "fpr.finetune_steps", "fpr.eval_every", "fpr.early_stop_patience",
            "fpr.kl_anneal_steps", "fpr.pos_fraction")
_CG_INFER = ("cg.num_candidates", "cg.nms_radius_mm", "cg.window_overlap", "cg.window_size",
             "cg.blend", "cg.infer_batch_size", "cg.roi_margin_mm", "cg.rpn_candidates",
             "cg.rpn_iou", "fpr.infer_batch_size")
# Fields added after run folders were recorded, with the value that keeps the behaviour from
# before them: at that value a field is left out of its stage's fields and fingerprint, so a
# run folder made before the field existed is not stale (nodulejax.study.plan).
ADDED_FIELDS = {"fpr.infer_batch_size": 0}
STAGE_FIELDS = {
    "data": ("data.kind", "data.root", "data.phantom.*"),
    "prepare": ("data.spacing", "data.hu_window", "data.*_folds", "data.lidc_masks"),
    "cg": ("seed", "cg.*") + tuple("!" + f for f in _CG_INFER),
    "fpr_seg": ("seed", "fpr.*", "!fpr.head", "!fpr.init_from", "!fpr.infer_batch_size")
    + tuple("!" + f for f in _FPR_RUN) + ("fpr.seg_pretrain_steps",),
    "fpr": ("seed", "fpr.*", "!fpr.head", "!fpr.init_from", "!fpr.seg_pretrain_steps",
            "!fpr.infer_batch_size"),
    "synth": ("seed", "synth.*"),
    "pool": ("seed", "pgd.*", "pool.*"),
    "augmented": ("seed", "fpr.*", "!fpr.head", "!fpr.init_from", "!fpr.seg_pretrain_steps",
                  "!fpr.infer_batch_size", "train.pos_ratios", "train.neg_ratios",
                  "train.poisson_scales", "train.aug_source", "train.inloop_target", "train.rows",
                  "train.finetune_seeds"),
    "detect": _CG_INFER + ("train.rows", "eval.min_diameter_mm"),
    "evaluate": ("seed", "eval.*", "train.rows"),
    "stress": ("pgd.*", "stress.*", "train.rows", "train.finetune_seeds",
               "eval.min_diameter_mm"),  # Table 5 positives
    "figures": ("seed", "pgd.*", "stress.seed"),
    "toy": ("seed", "toy.*"),
    "claims": ("seed", "eval.*", "train.rows", "train.finetune_seeds"),
    "report": ("report.*",),
}
# The stages whose outputs each stage reads (a changed input invalidates the stage too).
STAGE_INPUTS = {
    "data": (), "prepare": ("data",), "cg": ("prepare",), "fpr_seg": ("prepare",),
    "fpr": ("fpr_seg",), "synth": ("prepare",), "pool": ("fpr", "synth"),
    "augmented": ("pool",), "detect": ("cg", "fpr", "augmented"), "evaluate": ("detect",),
    "stress": ("augmented", "synth"), "figures": ("fpr", "synth"), "toy": (),
    "claims": ("evaluate", "stress"), "report": ("evaluate", "stress", "figures", "toy", "claims"),
}
# What a redo removes first (relative to WORKDIR): checkpoints would resume, a pool refuses a
# changed config, cached candidates and FPR patch sets (cut from the prepared scans) would be
# reused.
STAGE_OUTPUTS = {
    "data": ("data",), "prepare": ("cache", "patches"),
    "cg": tuple(f"checkpoints/{m}" for m in CG_MODELS) + tuple(f"logs/{m}" for m in CG_MODELS),
    "fpr_seg": (f"checkpoints/{SEG_MODEL}", f"logs/{SEG_MODEL}"),
    "fpr": tuple(p for r in BASELINES for p in (f"checkpoints/{model_name(r)}",
                                                f"logs/{model_name(r)}")),
    "synth": (f"checkpoints/{SYNTH_MODEL}", f"logs/{SYNTH_MODEL}"), "pool": ("pool",),
    "augmented": tuple(f"{d}/{model_name(r)}{replicas}" for r in AUGMENTED
                       for replicas in ("", ".s*") for d in ("checkpoints", "logs")),
    "detect": ("candidates", "eval/predictions"), "evaluate": ("eval/froc",),
    "stress": ("eval/stress",), "figures": ("eval/figures",), "toy": ("eval/toy",),
    "claims": ("report/claims.json",), "report": (),
}
