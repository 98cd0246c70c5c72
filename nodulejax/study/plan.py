"""Which stages of a study are done, stale or to be redone: config fingerprints of stages.

A stage's fingerprint is a digest of the config fields it reads (``stages.STAGE_FIELDS``) and
of the fingerprints of the stages it consumes (``stages.STAGE_INPUTS``), so it is a pure
function of the config: a changed field changes the fingerprint of its stage and of every
stage downstream. Each marker ``WORKDIR/stages/<name>.json`` stores its fingerprint and
fields under ``"_inputs"``; :func:`check` refuses a re-run whose fingerprints differ, naming
the changed fields and the stages they invalidate, unless ``config.rerun`` names them.
"""

from __future__ import annotations

from nodulejax.errors import ConfigError, nearest
from nodulejax.runtime.config_tools import config_diff, fingerprint, select
from nodulejax.study.stages import ADDED_FIELDS, STAGE_FIELDS, STAGE_INPUTS, STUDY_STAGES

__all__ = ["stage_fields", "fingerprints", "downstream", "rerun_stages", "stale_stages",
           "check", "marker_inputs", "INPUTS_KEY"]

INPUTS_KEY = "_inputs"  # where a marker keeps its fingerprint and fields


def stage_fields(config, stage: str) -> dict:
    """The flattened config fields ``stage`` reads (``{"cg.steps": 4, ...}``), less the
    ``stages.ADDED_FIELDS`` at their value from before they existed."""
    pats = STAGE_FIELDS[stage]
    fields = select(config, [p for p in pats if not p.startswith("!")],
                    exclude=[p[1:] for p in pats if p.startswith("!")])
    return {k: v for k, v in fields.items()
            if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}


def fingerprints(config) -> dict[str, str]:
    """``{stage: fingerprint}`` for every study stage, in order."""
    out: dict[str, str] = {}
    for s in STUDY_STAGES:
        out[s] = fingerprint({"fields": stage_fields(config, s),
                              "inputs": {i: out[i] for i in STAGE_INPUTS[s]}})
    return out


def marker_inputs(config, stage: str, fps: dict[str, str] | None = None) -> dict:
    """What a marker of ``stage`` records: its fingerprint, fields and input fingerprints."""
    fps = fps or fingerprints(config)
    return {"fingerprint": fps[stage], "fields": stage_fields(config, stage),
            "stages": {i: fps[i] for i in STAGE_INPUTS[stage]}}


def downstream(names) -> tuple[str, ...]:
    """``names`` and every study stage that consumes them, directly or not (study order)."""
    out = set(names)
    for s in STUDY_STAGES:
        if any(i in out for i in STAGE_INPUTS[s]):
            out.add(s)
    return tuple(s for s in STUDY_STAGES if s in out)


def rerun_stages(config) -> tuple[str, ...]:
    """The stages ``config.rerun`` ("cg,fpr") asks to redo, with their downstream stages."""
    raw = str(config.get("rerun", "") or "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for n in names:
        if n not in STUDY_STAGES:
            raise ConfigError(f"config.rerun: unknown stage {n!r}{nearest(n, STUDY_STAGES)}; "
                              f"stages: {', '.join(STUDY_STAGES)}")
    return downstream(names)


def stale_stages(config, records: dict[str, dict]) -> dict[str, list[str]]:
    """``{stage: [changed field, ...]}`` for each recorded stage whose fingerprint differs
    from the config's (a stage whose own fields are unchanged lists its changed inputs as
    ``"stage <name>"``). Markers without a fingerprint are not checked."""
    fps = fingerprints(config)
    out: dict[str, list[str]] = {}
    for s, rec in records.items():
        saved = (rec or {}).get(INPUTS_KEY)
        if s not in fps or not saved or saved.get("fingerprint") == fps[s]:
            continue
        changed = [f"{k} ({a!r} -> {b!r})" for k, a, b in
                   config_diff(saved.get("fields", {}), stage_fields(config, s))]
        changed += [f"stage {i}" for i in STAGE_INPUTS[s]
                    if saved.get("stages", {}).get(i) != fps[i]]
        out[s] = changed
    return out


def check(config, records: dict[str, dict], workdir: str) -> tuple[str, ...]:
    """The stages to redo (``config.rerun`` and downstream); ConfigError, in one line, when a
    recorded stage is stale and not among them."""
    redo = rerun_stages(config)
    stale = {s: c for s, c in stale_stages(config, records).items() if s not in redo}
    if not stale:
        return redo
    fields = sorted({f for c in stale.values() for f in c if not f.startswith("stage ")})
    roots = [s for s, c in stale.items() if any(not f.startswith("stage ") for f in c)]
    first = ",".join(roots or list(stale)[:1])
    raise ConfigError(
        f"{workdir}/stages: the config changed since these stages ran: "
        f"{'; '.join(fields) or 'their inputs'}; it invalidates {', '.join(stale)}; "
        f"redo them with --config.rerun={first} (which redoes their downstream stages too) "
        "or use a fresh --workdir")
