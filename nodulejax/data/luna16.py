"""The LUNA16 dataset layout: annotation / candidate / seriesuid / submission CSVs and folds.

LUNA16 (Setio et al., 2017; the paper's Section 4 data) ships as

    ROOT/subset0 .. subset9/<seriesuid>.mhd (+ .raw)   ten folds, fold k = subsetk
    ROOT/annotations.csv            seriesuid,coordX,coordY,coordZ,diameter_mm
    ROOT/annotations_excluded.csv   same columns; findings that are neither hits nor FPs
    ROOT/candidates.csv, candidates_V2.csv   seriesuid,coordX,coordY,coordZ,class
    ROOT/seriesuids.csv             one seriesuid per row, NO header row

and a detector submits ``seriesuid,coordX,coordY,coordZ,probability`` rows. Coordinates are
world LPS millimetres ``(x, y, z)`` (ITK convention, see ``nodulejax.data.io.CTVolume``).

Every reader refuses input it cannot read faithfully with
:class:`nodulejax.errors.LUNA16FormatError`, whose message names the file and the 1-based
line (the header is line 1): an empty file, a missing column, a short row, a non-numeric or
non-finite number, a number out of its range (a diameter <= 0 other than
``annotations_excluded.csv``'s ``-1`` "unknown", a class other than 0/1, a probability
outside [0, 1]; the message then also names the 1-based column), a column named twice in
the header, a non-integer class, a seriesuid that is empty or could escape a folder
(contains ``/``, ``\\`` or ``..``), a scan listed twice in ``seriesuids.csv``, a prediction
for a scan that is not in ``known_uids``. Outputs are vectorised numpy arrays.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from nodulejax.data.io import load_ct
from nodulejax.errors import LUNA16FormatError, NoduleJaxError
from nodulejax.runtime.files import atomic_write

__all__ = [
    "UNKNOWN_DIAMETER_MM",
    "hit_radius_sq",
    "hit_matrix",
    "Annotations",
    "Candidates",
    "Predictions",
    "read_annotations",
    "read_candidates",
    "read_seriesuids",
    "read_predictions",
    "write_submission",
    "check_seriesuid",
    "Luna16Dataset",
    "UnknownScanError",
    "LUNA16FormatError",
]

_XYZ = ("coordX", "coordY", "coordZ")
SUBMISSION_HEADER = ("seriesuid", *_XYZ, "probability")


class UnknownScanError(NoduleJaxError, KeyError):
    """A seriesuid asked of a :class:`Luna16Dataset` that holds no such scan."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------


@dataclass
class Annotations:
    """Nodule annotations: ``seriesuid (N,) str``, ``xyz (N, 3) float64`` world mm,
    ``diameter_mm (N,) float64`` (``-1`` in ``annotations_excluded.csv`` means unknown)."""

    seriesuid: np.ndarray
    xyz: np.ndarray
    diameter_mm: np.ndarray

    def __len__(self) -> int:
        return int(self.seriesuid.shape[0])

    def for_uid(self, uid: str) -> Annotations:
        """The rows of one scan."""
        m = self.seriesuid == uid
        return Annotations(self.seriesuid[m], self.xyz[m], self.diameter_mm[m])


@dataclass
class Candidates:
    """Candidate locations: ``seriesuid (N,)``, ``xyz (N, 3)`` world mm, ``label (N,) int64``
    (LUNA16's ``class``: 1 nodule, 0 not)."""

    seriesuid: np.ndarray
    xyz: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.seriesuid.shape[0])

    def for_uid(self, uid: str) -> Candidates:
        m = self.seriesuid == uid
        return Candidates(self.seriesuid[m], self.xyz[m], self.label[m])


@dataclass
class Predictions:
    """Detections / a submission: ``seriesuid (N,)``, ``xyz (N, 3)`` world mm,
    ``probability (N,) float64``."""

    seriesuid: np.ndarray
    xyz: np.ndarray
    probability: np.ndarray

    def __len__(self) -> int:
        return int(self.seriesuid.shape[0])

    def for_uid(self, uid: str) -> Predictions:
        m = self.seriesuid == uid
        return Predictions(self.seriesuid[m], self.xyz[m], self.probability[m])


# ----------------------------------------------------------------------------------------
# Parsing helpers
# ----------------------------------------------------------------------------------------


def check_seriesuid(uid: str, where: str) -> str:
    """Return ``uid`` stripped; raise LUNA16FormatError (message starts with ``where``) if it
    is empty or could name another folder (``/``, ``\\``, ``..``, a NUL byte)."""
    u = uid.strip()
    if not u:
        raise LUNA16FormatError(f"{where}: empty seriesuid")
    if "/" in u or "\\" in u or ".." in u or "\x00" in u:
        raise LUNA16FormatError(
            f"{where}: seriesuid {u!r} contains a path separator or '..'; refusing it"
        )
    return u


def _float(text: str, where: str, column: str, col: int | None = None) -> float:
    """``float(text)``, finite, or LUNA16FormatError naming ``where`` (file and line), the
    1-based column number ``col`` and the column name."""
    at = f"column {column!r}" if col is None else f"column {col} ({column!r})"
    try:
        v = float(text)
    except ValueError:
        raise LUNA16FormatError(f"{where}: {at} is not a number: {text!r}") from None
    if not math.isfinite(v):
        raise LUNA16FormatError(f"{where}: {at} is not finite: {text!r}")
    return v


def _out_of_range(where: str, column: str, col: int, text: str, meaning: str):
    return LUNA16FormatError(f"{where}: column {col} ({column!r}) = {text!r} is out of range: "
                             f"{meaning}")


def _read_rows(
    path: str | os.PathLike, columns: Sequence[str]
) -> tuple[str, list[tuple[int, list[str]]], list[int]]:
    """Read a CSV with a header naming each of ``columns`` once. Returns the path as str,
    ``[(line_number, [value per column])]`` (blank lines skipped) and the 1-based column
    number of each of ``columns``."""
    path = os.fspath(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise LUNA16FormatError(f"{path}: cannot open: {e.strerror or e}") from e
    rows: list[tuple[int, list[str]]] = []
    with f:
        reader = csv.reader(f)
        try:
            header = None
            for rec in reader:
                if rec and any(c.strip() for c in rec):
                    header = [c.strip() for c in rec]
                    header_line = reader.line_num
                    break
            if header is None:
                raise LUNA16FormatError(f"{path}: line 1: empty file (expected a header row)")
            missing = [c for c in columns if c not in header]
            if missing:
                raise LUNA16FormatError(
                    f"{path}: line {header_line}: header {header} lacks column(s) {missing}"
                )
            twice = [c for c in columns if header.count(c) > 1]
            if twice:
                raise LUNA16FormatError(
                    f"{path}: line {header_line}: column(s) {twice} appear more than once in "
                    f"the header {header}; which one is meant is ambiguous"
                )
            idx = [header.index(c) for c in columns]
            need = max(idx) + 1
            for rec in reader:
                if not rec or not any(c.strip() for c in rec):
                    continue
                if len(rec) < need:
                    raise LUNA16FormatError(
                        f"{path}: line {reader.line_num}: {len(rec)} field(s), expected at "
                        f"least {need} for columns {list(columns)}"
                    )
                if len(rec) > len(header) and any(c.strip() for c in rec[len(header):]):
                    raise LUNA16FormatError(
                        f"{path}: line {reader.line_num}: {len(rec)} field(s), more than the "
                        f"header's {len(header)} (a stray comma shifts the columns?)"
                    )
                rows.append((reader.line_num, [rec[i].strip() for i in idx]))
        except csv.Error as e:
            raise LUNA16FormatError(f"{path}: line {reader.line_num}: bad CSV: {e}") from e
        except UnicodeDecodeError as e:
            raise LUNA16FormatError(f"{path}: not UTF-8 text: {e}") from e
    return path, rows, [i + 1 for i in idx]


def _parse_xyz_table(
    path: str | os.PathLike, last: str, known_uids: Iterable[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Shared reader for the ``seriesuid,coordX,coordY,coordZ,<last>`` tables.

    Returns uids, xyz (N, 3) world mm (finite), the raw ``(where, text)`` of the last column
    and that column's 1-based number."""
    p, rows, cols = _read_rows(path, ("seriesuid", *_XYZ, last))
    known = None if known_uids is None else set(known_uids)
    uids: list[str] = []
    xyz = np.empty((len(rows), 3), np.float64)
    lasts: list[tuple[str, str]] = []
    for i, (line, vals) in enumerate(rows):
        where = f"{p}: line {line}"
        uid = check_seriesuid(vals[0], where)
        if known is not None and uid not in known:
            raise LUNA16FormatError(f"{where}: seriesuid {uid!r} is not a known scan")
        uids.append(uid)
        for k in range(3):
            xyz[i, k] = _float(vals[1 + k], where, _XYZ[k], cols[1 + k])
        lasts.append((where, vals[4]))
    return np.array(uids, dtype=str), xyz, lasts, cols[4]


# ----------------------------------------------------------------------------------------
# Readers and writer
# ----------------------------------------------------------------------------------------


def read_annotations(
    path: str | os.PathLike, *, unknown_diameter: bool | None = None
) -> Annotations:
    """Read ``annotations.csv`` or ``annotations_excluded.csv``
    (``seriesuid,coordX,coordY,coordZ,diameter_mm``; extra columns are ignored).

    ``diameter_mm`` must be finite and > 0, or exactly ``-1`` (LUNA16's "unknown") when
    ``unknown_diameter`` is true; ``None`` (default) allows ``-1`` only in a file whose name
    contains ``excluded`` (the one LUNA16 file that uses it)."""
    if unknown_diameter is None:
        unknown_diameter = "excluded" in os.path.basename(os.fspath(path)).lower()
    uids, xyz, lasts, col = _parse_xyz_table(path, "diameter_mm")
    d = np.array([_float(t, w, "diameter_mm", col) for w, t in lasts], dtype=np.float64)
    for (w, t), v in zip(lasts, d.tolist(), strict=True):
        if not (v > 0 or (unknown_diameter and v == -1)):
            raise _out_of_range(w, "diameter_mm", col, t, "a diameter must be > 0 mm" + (
                " or -1 (unknown)" if unknown_diameter else
                " (-1, 'unknown', is only used in annotations_excluded.csv)"))
    return Annotations(uids, xyz, d.reshape(-1))


def read_candidates(path: str | os.PathLike) -> Candidates:
    """Read ``candidates.csv`` / ``candidates_V2.csv`` (``seriesuid,coordX,coordY,coordZ,class``).
    ``class`` must be an integer (``1`` or ``1.0`` style), 0 or 1."""
    uids, xyz, lasts, col = _parse_xyz_table(path, "class")
    labels = np.empty(len(lasts), np.int64)
    for i, (w, t) in enumerate(lasts):
        v = _float(t, w, "class", col)
        if v != int(v):
            raise LUNA16FormatError(f"{w}: column {col} ('class') is not an integer: {t!r}")
        if v not in (0, 1):
            raise _out_of_range(w, "class", col, t, "a class is 0 (not a nodule) or 1 (nodule)")
        labels[i] = int(v)
    return Candidates(uids, xyz, labels)


def read_predictions(
    path: str | os.PathLike, known_uids: Iterable[str] | None = None
) -> Predictions:
    """Read a detections / submission CSV (``seriesuid,coordX,coordY,coordZ,probability``).

    A header-only file is valid (no detections). With ``known_uids`` (e.g. the uids of
    ``seriesuids.csv``) a row naming any other scan is refused. ``probability`` must be in
    [0, 1]."""
    uids, xyz, lasts, col = _parse_xyz_table(path, "probability", known_uids)
    prob = np.array([_float(t, w, "probability", col) for w, t in lasts], dtype=np.float64)
    for (w, t), v in zip(lasts, prob.tolist(), strict=True):
        if not 0.0 <= v <= 1.0:
            raise _out_of_range(w, "probability", col, t, "a probability is in [0, 1]")
    return Predictions(uids, xyz, prob.reshape(-1))


def read_seriesuids(path: str | os.PathLike) -> list[str]:
    """Read ``seriesuids.csv``: one seriesuid per row, no header (every row is a scan; only the
    first field of a row is used). Blank lines are skipped; an empty file or a scan listed
    twice is refused."""
    p = os.fspath(path)
    try:
        f = open(p, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise LUNA16FormatError(f"{p}: cannot open: {e.strerror or e}") from e
    uids: list[str] = []
    first_line: dict[str, int] = {}
    with f:
        reader = csv.reader(f)
        try:
            for rec in reader:
                if not rec or not rec[0].strip():
                    if rec and any(c.strip() for c in rec):
                        raise LUNA16FormatError(f"{p}: line {reader.line_num}: empty seriesuid")
                    continue
                where = f"{p}: line {reader.line_num}"
                uid = check_seriesuid(rec[0], where)
                if uid in first_line:
                    raise LUNA16FormatError(
                        f"{where}: duplicated scan {uid!r} (first listed on line {first_line[uid]})"
                    )
                first_line[uid] = reader.line_num
                uids.append(uid)
        except csv.Error as e:
            raise LUNA16FormatError(f"{p}: line {reader.line_num}: bad CSV: {e}") from e
        except UnicodeDecodeError as e:
            raise LUNA16FormatError(f"{p}: not UTF-8 text: {e}") from e
    if not uids:
        raise LUNA16FormatError(f"{p}: line 1: empty file (expected one seriesuid per row)")
    return uids


def write_submission(
    path: str | os.PathLike,
    seriesuid: Sequence[str] | np.ndarray,
    xyz: np.ndarray,
    probability: np.ndarray,
) -> None:
    """Write a LUNA16 submission CSV ``seriesuid,coordX,coordY,coordZ,probability``.

    ``seriesuid (N,)``, ``xyz (N, 3)`` world mm, ``probability (N,)``. Floats are written with
    ``repr`` precision so :func:`read_predictions` gives the same values back. The file is
    written to a temporary name and renamed, so a reader never sees half a file. Raises
    ``ValueError`` on inconsistent shapes or non-finite values and LUNA16FormatError on a bad
    seriesuid."""
    p = os.fspath(path)
    uids = [str(u) for u in np.asarray(seriesuid, dtype=object).reshape(-1)]
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3) if len(uids) else np.zeros((0, 3))
    prob = np.asarray(probability, dtype=np.float64).reshape(-1)
    if not (len(uids) == xyz.shape[0] == prob.shape[0]):
        raise ValueError(
            f"{p}: write_submission got {len(uids)} seriesuids, {xyz.shape[0]} coordinates, "
            f"{prob.shape[0]} probabilities"
        )
    if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(prob))):
        raise ValueError(f"{p}: write_submission got non-finite coordinates or probabilities")
    uids = [check_seriesuid(u, f"{p}: row {i + 2}") for i, u in enumerate(uids)]

    def write(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(SUBMISSION_HEADER)
        for u, c, pr in zip(uids, xyz.tolist(), prob.tolist(), strict=True):
            w.writerow([u, repr(c[0]), repr(c[1]), repr(c[2]), repr(pr)])

    atomic_write(p, write, text=True)


# ----------------------------------------------------------------------------------------
# Dataset folder
# ----------------------------------------------------------------------------------------

_SUBSET_RE = re.compile(r"^subset(\d)$")
_ANNOTATIONS = ("annotations.csv", os.path.join("CSVFILES", "annotations.csv"))
_EXCLUDED = (
    "annotations_excluded.csv",
    os.path.join("evaluationScript", "annotations", "annotations_excluded.csv"),
)
_CANDIDATES = (
    "candidates_V2.csv",
    os.path.join("candidates_V2", "candidates_V2.csv"),
    "candidates.csv",
)
_SERIESUIDS = (
    "seriesuids.csv",
    os.path.join("evaluationScript", "annotations", "seriesuids.csv"),
)


class Luna16Dataset:
    """A LUNA16-layout folder: scans ``ROOT/subsetK/<uid>.mhd`` (fold ``K`` in 0..9) and CSVs.

    ``uids(folds)`` lists scans (sorted), ``fold_of``/``path``/``load`` look one up. The CSV
    properties read the file on first use (``None`` when the file is absent); candidates prefer
    ``candidates_V2.csv`` over ``candidates.csv``. A seriesuid found in two subsets is refused
    with LUNA16FormatError naming both files."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise LUNA16FormatError(f"{self.root}: not a directory (LUNA16 root expected)")
        self._fold: dict[str, int] = {}
        self._path: dict[str, str] = {}
        for name in sorted(os.listdir(self.root)):
            m = _SUBSET_RE.match(name)
            sub = os.path.join(self.root, name)
            if not m or not os.path.isdir(sub):
                continue
            fold = int(m.group(1))
            for fn in sorted(os.listdir(sub)):
                if not fn.lower().endswith(".mhd"):
                    continue
                uid = fn[: -len(".mhd")]
                full = os.path.join(sub, fn)
                if uid in self._path:
                    raise LUNA16FormatError(
                        f"{full}: scan {uid!r} is also in {self._path[uid]}; each scan must be "
                        "in exactly one subset"
                    )
                self._fold[uid] = fold
                self._path[uid] = full

    def __repr__(self) -> str:
        return f"Luna16Dataset({self.root!r}, {len(self._path)} scans)"

    def __len__(self) -> int:
        return len(self._path)

    def __contains__(self, uid: object) -> bool:
        return uid in self._path

    def uids(self, folds: int | Iterable[int] | None = None) -> list[str]:
        """Sorted seriesuids of the scans in ``folds`` (all scans when ``None``)."""
        if folds is None:
            return sorted(self._path)
        fs = {int(folds)} if isinstance(folds, int | np.integer) else {int(f) for f in folds}
        return sorted(u for u, f in self._fold.items() if f in fs)

    def _check(self, uid: str) -> None:
        if uid not in self._path:
            raise UnknownScanError(f"{self.root}: no scan {uid!r} in subset0..subset9")

    def fold_of(self, uid: str) -> int:
        """The fold (subset number) of a scan."""
        self._check(uid)
        return self._fold[uid]

    def path(self, uid: str) -> str:
        """Path of the scan's ``.mhd`` header."""
        self._check(uid)
        return self._path[uid]

    def load(self, uid: str, **kwargs):
        """Load a scan with :func:`nodulejax.data.io.load_ct` -> ``CTVolume`` (HU, (z, y, x))."""
        return load_ct(self.path(uid), **kwargs)

    def _find(self, names: Sequence[str]) -> str | None:
        for n in names:
            p = os.path.join(self.root, n)
            if os.path.isfile(p):
                return p
        return None

    @functools.cached_property
    def annotations(self) -> Annotations | None:
        p = self._find(_ANNOTATIONS)
        return None if p is None else read_annotations(p, unknown_diameter=False)

    @functools.cached_property
    def excluded(self) -> Annotations | None:
        p = self._find(_EXCLUDED)
        return None if p is None else read_annotations(p, unknown_diameter=True)

    @functools.cached_property
    def candidates(self) -> Candidates | None:
        p = self._find(_CANDIDATES)
        return None if p is None else read_candidates(p)

    @functools.cached_property
    def seriesuids(self) -> list[str] | None:
        """``seriesuids.csv`` when present (the evaluation's scan list), else ``None``."""
        p = self._find(_SERIESUIDS)
        return None if p is None else read_seriesuids(p)


# ----------------------------------------------------------------------------------------
# The LUNA16 hit rule (one home: the candidate sensitivity and the FROC both use it)
# ----------------------------------------------------------------------------------------

UNKNOWN_DIAMETER_MM = 10.0  # LUNA16: a diameter < 0 means 10 mm


def hit_radius_sq(diameter_mm) -> np.ndarray:
    """Squared hit radius (mm^2) of findings of diameter ``d``: ``(d / 2)^2``, d < 0 -> 10 mm."""
    d = np.asarray(diameter_mm, np.float64)
    return (np.where(d < 0.0, UNKNOWN_DIAMETER_MM, d) / 2.0) ** 2


def hit_matrix(marks, centres, r2) -> np.ndarray:
    """(marks, findings) bool: a mark hits a finding when its squared distance in mm (summed
    over x, y, z as the official evaluation script does) is strictly below ``r2``.
    marks (M, 3), centres (G, 3) in mm (any one axis order), r2 (G,)."""
    marks = np.asarray(marks, np.float64).reshape(-1, 3)
    centres = np.asarray(centres, np.float64).reshape(-1, 3)
    dx = marks[:, None, 0] - centres[None, :, 0]
    dy = marks[:, None, 1] - centres[None, :, 1]
    dz = marks[:, None, 2] - centres[None, :, 2]
    return dx * dx + dy * dy + dz * dz < np.asarray(r2, np.float64)[None, :]
