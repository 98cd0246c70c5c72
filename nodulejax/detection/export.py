"""A trained detector as one self-contained folder (``python -m nodulejax.detection export``).

Layout of ``MODEL_DIR``::

    params/cg/ params/cg_ggo/ params/rpn/ params/fpr/   Orbax checkpoints of the params
    detector.json   the config fields detection reads (data.spacing, data.hu_window, the cg
                    and fpr blocks: architecture, windows, NMS, candidate cap, patch size,
                    head; runtime.conv_impl), the package version, the FPR model, the
                    default threshold and the run's measured CPM
    model.md        what it was trained on, with which config, and how well it did
    manifest.json   sha256 of every file above and their digest

:func:`load_model` needs nothing but the folder: it checks that every required part is
there, that every file's sha256 matches the manifest and that the manifest's digest matches
its list, then restores the params onto the default device. An incomplete folder or a
changed file is a :class:`~nodulejax.errors.CheckpointError` naming what is wrong.

Default threshold (``threshold`` in detector.json): the FPR probability at 1 false positive
per scan on the run's test FROC (``WORKDIR/eval/froc/<row>/froc.json``, when it records the
curve's thresholds), else 0.5; ``rule`` in detector.json says which.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np

from nodulejax.errors import CheckpointError, ConfigError
from nodulejax.experiments import CG_MODELS, file_name, row_config, row_of_model
from nodulejax.runtime import checkpoint
from nodulejax.runtime.files import atomic_write_json, atomic_write_text

FORMAT = "nodulejax-detector/1"
PARTS = ("cg", "cg_ggo", "rpn", "fpr")
MANIFEST = "manifest.json"
REQUIRED = ("detector.json", "model.md")
DEFAULT_THRESHOLD = 0.5
OPERATING_FPS = 1.0  # FPs per scan of the default threshold


def package_version() -> str:
    try:
        return importlib.metadata.version("nodulejax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------- config
def _tuples(x):
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def as_config(d: dict) -> ml_collections.ConfigDict:
    """A JSON config dict (lists) as the ConfigDict the code reads (tuples)."""
    return ml_collections.ConfigDict(_tuples(d))


def detection_fields(config) -> dict:
    """The config fields whole-scan detection reads (JSON data)."""
    d = json.loads(json.dumps(config.to_dict(), default=repr))
    return {"data": {"spacing": float(d["data"]["spacing"]),
                     "hu_window": [float(v) for v in d["data"]["hu_window"]]},
            "cg": d["cg"], "fpr": d["fpr"],
            "runtime": {"conv_impl": str(d.get("runtime", {}).get("conv_impl", "auto"))},
            "eval": {"min_diameter_mm": float(d.get("eval", {}).get("min_diameter_mm", 0.0))},
            "train": {"progress": True}}


# ----------------------------------------------------------------------------- FROC
def froc_threshold(froc: dict | None, fps: float = OPERATING_FPS):
    """(threshold, FPs/scan, sensitivity) of the lowest FPR probability whose FROC point has
    at most ``fps`` false positives per scan, or None when ``froc`` records no thresholds."""
    curve = (froc or {}).get("curve") or {}
    thr = curve.get("thresholds")
    if not thr:
        return None
    best = None
    for f, s, t in zip(curve["fps"], curve["sensitivity"], thr, strict=False):
        if t is not None and float(f) <= fps + 1e-9:
            best = (float(t), float(f), float(s))
    return best


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def measured(workdir: str, row: str | None) -> dict:
    """What the run measured for FPR row ``row``: its test FROC (CPM, CI, sensitivities)
    from ``eval/froc/<row>/froc.json`` or ``stages/evaluate.json``, and the FROC's
    threshold at 1 FP/scan when recorded (empty dict when nothing was measured)."""
    if row is None:
        return {}
    path = os.path.join(workdir, "eval", "froc", file_name(row), "froc.json")
    froc = _read_json(path)
    out: dict = {}
    if froc is not None:
        out = {k: froc.get(k) for k in ("cpm", "cpm_ci", "sensitivity_at", "n_scans",
                                        "n_nodules", "n_detected", "min_diameter_mm")}
        out["source"] = os.path.relpath(path, workdir)
        t = froc_threshold(froc)
        if t is not None:
            out["threshold_at_1fps"] = {"threshold": t[0], "fps": t[1], "sensitivity": t[2]}
        return out
    stage = _read_json(os.path.join(workdir, "stages", "evaluate.json")) or {}
    res = (stage.get("froc") or {}).get(row)
    if res:
        out = {k: res.get(k) for k in ("cpm", "cpm_ci", "sensitivity_at", "n_nodules",
                                       "n_detected")}
        out["source"] = os.path.join("stages", "evaluate.json")
    return out


# ----------------------------------------------------------------------------- digest
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(folder):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), folder).replace(os.sep, "/")
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def digest_of(files: dict) -> str:
    """The folder's digest: sha256 of its sorted ``path sha256`` lines."""
    text = "".join(f"{k} {files[k]}\n" for k in sorted(files))
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(folder: str) -> str:
    files = {rel: _sha256(os.path.join(folder, rel)) for rel in _files(folder)}
    digest = digest_of(files)
    atomic_write_json(os.path.join(folder, MANIFEST),
                      {"format": FORMAT, "files": files, "digest": digest}, indent=1)
    return digest


def verify(folder: str) -> tuple[dict, str]:
    """(manifest, digest) of an exported model folder; CheckpointError naming the first
    missing part, changed file or a digest that does not match its list."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise CheckpointError(f"--model {folder}: no such folder (an exported model: "
                              "python -m nodulejax.detection export ... --out MODEL_DIR)")
    man = _read_json(os.path.join(folder, MANIFEST))
    if not isinstance(man, dict) or not isinstance(man.get("files"), dict):
        raise CheckpointError(f"{folder}: incomplete model folder: {MANIFEST} is missing or "
                              "unreadable (export the model again)")
    if man.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: {MANIFEST} format {man.get('format')!r}; this "
                              f"version reads {FORMAT!r}")
    files = man["files"]
    for need in REQUIRED + tuple(f"params/{p}/" for p in PARTS):
        if not any(k == need or (need.endswith("/") and k.startswith(need)) for k in files):
            raise CheckpointError(f"{folder}: incomplete model folder: {MANIFEST} lists no "
                                  f"{need.rstrip('/')}")
    for rel in sorted(files):
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise CheckpointError(f"{folder}: incomplete model folder: {rel} is missing")
        if _sha256(path) != files[rel]:
            raise CheckpointError(f"{folder}: digest mismatch: {rel} differs from the "
                                  f"exported file (sha256 in {MANIFEST})")
    extra = [r for r in _files(folder) if r.startswith("params/") and r not in files]
    if extra:
        raise CheckpointError(f"{folder}: digest mismatch: {extra[0]} is not part of the "
                              f"exported model ({MANIFEST} does not list it)")
    digest = digest_of(files)
    if digest != man.get("digest"):
        raise CheckpointError(f"{folder}: digest mismatch: {MANIFEST} says "
                              f"{man.get('digest')!r}, its files give {digest}")
    return man, digest


# ----------------------------------------------------------------------------- model
@dataclasses.dataclass
class DetectorModel:
    """An exported detector, loaded: the config detection reads, the params of the CG
    networks ({"cg", "cg_ggo", "rpn"}) and of the FPR, detector.json and the digest."""

    folder: str
    config: ml_collections.ConfigDict
    cg_params: dict
    fpr_params: dict
    info: dict
    digest: str

    @property
    def threshold(self) -> float:
        return float(self.info["threshold"]["value"])

    @property
    def threshold_rule(self) -> str:
        return str(self.info["threshold"]["rule"])


def load_model(folder: str) -> DetectorModel:
    """The exported model in ``folder`` (verified, see :func:`verify`)."""
    _, digest = verify(folder)
    folder = os.path.abspath(folder)
    info = _read_json(os.path.join(folder, "detector.json"))
    if not isinstance(info, dict) or "config" not in info or "threshold" not in info:
        raise CheckpointError(f"{folder}: detector.json lacks 'config' or 'threshold'")
    params = {p: checkpoint.load_tree(os.path.join(folder, "params", p)) for p in PARTS}
    return DetectorModel(folder=folder, config=as_config(info["config"]),
                         cg_params={k: params[k] for k in CG_MODELS},
                         fpr_params=params["fpr"], info=info, digest=digest)


def _fmt(v, nd=3):
    return "n/a" if v is None else f"{float(v):.{nd}f}"


def model_card(info: dict) -> str:
    """model.md: what the exported detector was trained on and how well it did."""
    c, t, m = info["config"], info["threshold"], info.get("measured") or {}
    tr = info.get("trained_on", {})
    lines = [f"# Nodule detector: {info.get('row') or info['fpr_model']}", "",
             f"Exported by nodulejax {info['version']} on {info['exported']} from the run "
             f"folder `{info['workdir']}` (config `{tr.get('config_name')}`, seed "
             f"{tr.get('seed')}).", "",
             "## Networks", "",
             "- candidate generator (Section 3.1): `cg` (blob ResUNet), `cg_ggo` (its GGO "
             "fine-tune), `rpn` (ResUNet + RPN head), latest checkpoints;",
             f"- false-positive reducer: `{info['fpr_model']}` (Table 3 row "
             f"{info.get('row') or 'n/a'}, {c['fpr']['head']} head), best checkpoint.", "",
             "## Training data", "",
             f"- data: {tr.get('data')}",
             f"- folds: train {tr.get('train_folds')}, validation {tr.get('val_folds')}, "
             f"test {tr.get('test_folds')}",
             f"- scans prepared at {c['data']['spacing']} mm isotropic, HU window "
             f"{c['data']['hu_window']}", "",
             "## Measured on the run's test folds", ""]
    if m.get("cpm") is not None:
        ci = m.get("cpm_ci")
        sens = m.get("sensitivity_at") or {}
        lines += [f"- CPM {_fmt(m['cpm'])}" + (f" (95% CI {_fmt(ci[0])}-{_fmt(ci[1])})"
                                                if ci else "")
                  + f" on {m.get('n_scans', 'n/a')} scans, {m.get('n_nodules', 'n/a')} "
                    f"nodules (`{m.get('source')}`)",
                  "- sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPs/scan: "
                  + ", ".join(_fmt(v, 2) for v in sens.values())]
    else:
        lines.append("- not measured: the run folder has no test FROC for this model")
    lines += ["", "## Default threshold", "", f"- {t['value']:.4g}: {t['rule']}", "",
              "## Detection settings", "",
              f"- candidates: at most {c['cg']['num_candidates']} per scan, NMS radius "
              f"{c['cg']['nms_radius_mm']} mm, sliding window "
              f"{c['cg'].get('window_size') or c['cg']['input_size']} voxels, overlap "
              f"{c['cg']['window_overlap']}",
              f"- FPR patch {c['fpr']['patch_size']} voxels "
              f"({c['fpr']['patch_size'] * c['data']['spacing']:g} mm)", "",
              "Research code: not a medical device.", ""]
    return "\n".join(lines)


def export_model(workdir: str, out: str, fpr_model: str | None = None, *,
                 overwrite: bool = False) -> dict:
    """Write the detector of run folder ``workdir`` (CG networks + FPR ``fpr_model``, default
    the run's ``config.train.experiment``) to folder ``out`` (written to a temporary folder
    beside it and moved into place). Returns detector.json plus ``digest`` and ``out``."""
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir}: no such folder (a finished run folder)")
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it or choose "
                          "another folder")
    for name in CG_MODELS:
        if not os.path.isdir(checkpoint.model_dir(workdir, name)):
            have = ", ".join(checkpoint.trained_models(workdir)) or "none"
            raise CheckpointError(f"--workdir {workdir}: no trained {name} (checkpoints/{name}"
                                  "); export needs the candidate generator of a finished run "
                                  f"(models there: {have})")
    saved = checkpoint.saved_config(workdir, "cg", "latest")
    if fpr_model is None:
        fpr_model = str((saved.get("train") or {}).get("experiment") or "")
        if not fpr_model:
            raise ConfigError("--fpr-model: the run's config names no experiment; pass one")
    fpr = checkpoint.require_model(workdir, fpr_model)
    row = row_of_model(fpr)
    config = as_config(checkpoint.saved_config(workdir, fpr, "best"))
    if row:
        config = row_config(config, row)
    info_measured = measured(workdir, row)
    t = info_measured.get("threshold_at_1fps")
    threshold = ({"value": t["threshold"],
                  "rule": f"the FPR probability at {OPERATING_FPS:g} FP/scan on the run's test "
                          f"FROC (the lowest threshold with at most {OPERATING_FPS:g}: "
                          f"{t['fps']:.3g} FPs/scan, sensitivity {t['sensitivity']:.3f})"}
                 if t else {"value": DEFAULT_THRESHOLD,
                            "rule": f"the default {DEFAULT_THRESHOLD}: the run's test FROC "
                                    f"records no threshold at {OPERATING_FPS:g} FP/scan"})
    d = config.data
    info = {
        "format": FORMAT, "version": package_version(),
        "exported": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "workdir": workdir, "fpr_model": fpr, "row": row,
        "config": detection_fields(config), "threshold": threshold,
        "measured": info_measured,
        "trained_on": {"config_name": config.get("name"), "seed": config.get("seed"),
                       "data": (f"{d.kind} ({d.root})" if d.get("root") else
                                f"{d.get('kind', 'phantom')} (generated in the run folder)"),
                       "train_folds": list(d.train_folds), "val_folds": list(d.val_folds),
                       "test_folds": list(d.test_folds)},
    }
    params = {name: checkpoint.load_params(workdir, name, "latest") for name in CG_MODELS}
    params["fpr"] = checkpoint.load_params(workdir, fpr, "best")
    tmp = temp_beside(out)
    try:
        for name, p in params.items():
            checkpoint.save_tree(os.path.join(tmp, "params", name),
                                 _host(p))
        atomic_write_json(os.path.join(tmp, "detector.json"), info, indent=1)
        atomic_write_text(os.path.join(tmp, "model.md"), model_card(info))
        digest = write_manifest(tmp)
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dict(info, digest=digest, out=out)


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def temp_beside(out: str) -> str:
    """A new empty folder beside ``out`` (same file system, so it moves into place by a
    rename), with the permissions of a folder made by ``os.makedirs``."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def move_into_place(tmp: str, out: str) -> None:
    """Replace ``out`` (absent, empty, or with --overwrite a previous result) by ``tmp``."""
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.",
                               dir=os.path.dirname(out))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.remove(old)
