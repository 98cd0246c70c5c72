"""TFDS builders for FPR candidate patches, TensorFlow-free.

Two builders expose the false-positive-reduction training set of paper Section 3.1 (patches of
``P^3`` voxels at the working spacing centred on candidates; positives at annotated nodules,
negatives at ``candidates_V2.csv`` class-0 candidates away from any finding, see
:func:`nodulejax.data.patchsets.fpr_patches`):

* :class:`Luna16Patches` (``luna16_patches``): LUNA16 from a MANUAL download folder (tfds
  ``manual_dir``; the real layout ``subset0..9/*.mhd``, ``annotations.csv``,
  ``candidates_V2.csv``, optionally ``annotations_excluded.csv``). It never downloads.
* :class:`PhantomPatches` (``phantom_patches``): generates the phantom dataset
  (:mod:`nodulejax.data.phantom`) into the build folder with the configured seed / size.

Features per example: ``patch (P, P, P)`` float32 in [0, 1], or uint8 ``round(255 x)`` when
``quantize=True`` (4x smaller; :func:`dequantize` maps it back); ``label`` (0 non-nodule, 1
nodule); ``seriesuid``; ``fold`` (LUNA16 subset); ``center_xyz`` (world LPS mm, float32:
TFDS stores floats as float32).

Splits: ``splits="roles"`` gives ``train`` / ``validation`` / ``test`` from the config's
``train_folds`` / ``val_folds`` / ``test_folds`` (LUNA16 subsets); ``splits="subsets"`` gives
one split ``fold<k>`` per subset present.

TensorFlow is not needed and never imported: examples are written as ``array_record`` files
(``file_format="array_record"``, the ``array_record`` pip package) and read back with
``builder.as_data_source()``, a random-access source of numpy dicts (TFDS "data sources"
API). Training code should convert a split once to numpy arrays (:func:`split_arrays`) and
feed the jitted step from numpy; no TF op ever sits on the device path.

:func:`fpr_split_arrays` is the same data without TFDS at all (the default numpy path used by
the trainers): it returns exactly the arrays that the builders would write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zlib
from collections.abc import Iterable

import numpy as np

from nodulejax.data import luna16, patchsets, prepare
from nodulejax.data.phantom.generate import generate_dataset
from nodulejax.errors import ConfigError, LUNA16FormatError

FEATURE_KEYS = ("patch", "label", "seriesuid", "fold", "center_xyz")


# ------------------------------------------------------------------------------------------
# numpy path (no TFDS)
# ------------------------------------------------------------------------------------------


def quantize(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 ``round(255 x)`` (values outside [0, 1] are clipped)."""
    return np.round(np.clip(np.asarray(x, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (inverse of :func:`quantize` up to 1/510)."""
    return np.asarray(q, np.float32) / 255.0


def _scan_seed(seed: int, uid: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(uid.encode())) % (2**32)


def iter_fpr_examples(root: str, folds: Iterable[int], *, patch_size: int, spacing: float,
                      hu_window=(-1000.0, 400.0), neg_radius_mm: float = 10.0,
                      max_neg_per_scan: int | None = None, quantize_uint8: bool = False,
                      seed: int = 0, cache_dir: str | None = None):
    """Yield ``(key, example)`` FPR patches of every scan of ``folds`` under ``root``.

    One scan is prepared at a time (:func:`nodulejax.data.prepare.prepare_scan`), so memory
    stays at one scan plus its patches. ``key`` is ``"<uid>_<k>"``; ``example`` holds
    :data:`FEATURE_KEYS`. Negatives are subsampled with a per-scan seed derived from ``seed``
    and the uid (same seed -> same examples).
    """
    ds = luna16.Luna16Dataset(root)
    if ds.annotations is None or ds.candidates is None:
        raise LUNA16FormatError(f"{root}: needs annotations.csv and candidates_V2.csv "
                                f"(or candidates.csv) for FPR patches")
    table = prepare.read_nodule_table(str(ds.root))
    for uid in ds.uids(sorted(set(int(f) for f in folds))):
        scan = prepare.prepare_scan(ds, uid, spacing=spacing, window=tuple(hu_window),
                                    cache_dir=cache_dir, nodule_table=table)
        p = patchsets.fpr_patches([scan], patch_size, neg_radius_mm=neg_radius_mm,
                                  max_neg_per_scan=max_neg_per_scan, seed=_scan_seed(seed, uid))
        if len(p["y"]) == 0:
            continue
        xyz = np.atleast_2d(scan.geometry.voxel_to_world(p["zyx"].astype(np.float64)))
        for k in range(len(p["y"])):
            x = p["x"][k].astype(np.float32)
            yield f"{uid}_{k}", {
                "patch": quantize(x) if quantize_uint8 else x,
                "label": int(p["y"][k]),
                "seriesuid": uid,
                "fold": int(scan.fold),
                "center_xyz": xyz[k].astype(np.float32),
            }


def _stack(examples, patch_size: int, quantize_uint8: bool) -> dict:
    """Examples -> stacked arrays, in the canonical order (seriesuid, centre x, y, z)."""
    ex = sorted(examples, key=lambda e: (e["seriesuid"], *np.asarray(e["center_xyz"]).tolist()))
    p = patch_size
    dt = np.uint8 if quantize_uint8 else np.float32
    return {
        "patch": np.stack([e["patch"] for e in ex]) if ex else np.zeros((0, p, p, p), dt),
        "label": np.asarray([e["label"] for e in ex], np.int64),
        "seriesuid": np.asarray([e["seriesuid"] for e in ex], object),
        "fold": np.asarray([e["fold"] for e in ex], np.int64),
        "center_xyz": np.asarray([e["center_xyz"] for e in ex], np.float32).reshape(-1, 3),
    }


def fpr_split_arrays(root: str, folds: Iterable[int], **kwargs) -> dict:
    """TF- and TFDS-free: the FPR examples of ``folds`` stacked into numpy arrays.

    Same arguments as :func:`iter_fpr_examples`. Returns ``patch (N, P, P, P)`` (float32 or
    uint8), ``label (N,) int64``, ``seriesuid (N,) object``, ``fold (N,) int64``,
    ``center_xyz (N, 3) float32``, sorted by (seriesuid, centre).
    """
    return _stack((e for _, e in iter_fpr_examples(root, folds, **kwargs)),
                  kwargs["patch_size"], kwargs.get("quantize_uint8", False))


# ------------------------------------------------------------------------------------------
# TFDS builders
# ------------------------------------------------------------------------------------------

try:  # TFDS is a declared dependency, but keep the numpy path importable without it
    import tensorflow_datasets as tfds
except ImportError:  # pragma: no cover
    tfds = None


@dataclasses.dataclass
class PatchesSpec:
    """What a builder config produces (the fields enter the config name, hence the folder)."""

    patch_size: int = 64
    spacing: float = 0.625
    hu_window: tuple = (-1000.0, 400.0)
    quantize: bool = False
    neg_radius_mm: float = 10.0
    max_neg_per_scan: int | None = None
    splits: str = "roles"  # "roles" (train/validation/test) or "subsets" (fold0..fold9)
    train_folds: tuple = (0, 1, 2, 3, 4, 5, 6, 7)
    val_folds: tuple = (8,)
    test_folds: tuple = (9,)
    seed: int = 0  # negative subsampling
    # phantom only
    phantom_num_scans: int = 40
    phantom_seed: int = 0
    phantom_size_scale: float = 0.6
    phantom_num_subsets: int = 10
    phantom_max_voxels: int = 4_000_000

    def __post_init__(self):
        if self.splits not in ("roles", "subsets"):
            raise ConfigError(f"PatchesSpec.splits must be 'roles' or 'subsets', "
                              f"got {self.splits!r}")
        if int(self.patch_size) <= 0 or float(self.spacing) <= 0:
            raise ConfigError(f"PatchesSpec: patch_size ({self.patch_size}) and spacing "
                              f"({self.spacing}) must be positive")
        self.hu_window = tuple(float(v) for v in self.hu_window)
        for f in ("train_folds", "val_folds", "test_folds"):
            setattr(self, f, tuple(int(v) for v in getattr(self, f)))

    def tag(self) -> str:
        """Short stable name: ``p<P>_s<spacing>_<q|f>_<hash of all fields>``."""
        h = hashlib.sha1(repr(dataclasses.astuple(self)).encode()).hexdigest()[:8]
        return f"p{self.patch_size}_s{self.spacing:g}_{'q' if self.quantize else 'f'}_{h}" \
            .replace(".", "p")


def spec_from_config(config, **overrides) -> PatchesSpec:
    """:class:`PatchesSpec` from the project config (``data`` and ``fpr`` blocks)."""
    d = config.data
    kw = dict(patch_size=int(config.fpr.patch_size), spacing=float(d.spacing),
              hu_window=tuple(d.hu_window), train_folds=tuple(d.train_folds),
              val_folds=tuple(d.val_folds), test_folds=tuple(d.test_folds), seed=int(config.seed),
              phantom_num_scans=int(d.phantom.num_scans), phantom_seed=int(d.phantom.seed),
              phantom_size_scale=float(d.phantom.size_scale),
              phantom_num_subsets=int(d.phantom.num_subsets))
    kw.update(overrides)
    return PatchesSpec(**kw)


if tfds is not None:

    class PatchesConfig(tfds.core.BuilderConfig):
        """A :class:`PatchesSpec` as a TFDS builder config (named by ``spec.tag()``)."""

        def __init__(self, spec: PatchesSpec | None = None, name: str | None = None, **kw):
            spec = spec or PatchesSpec(**kw)
            super().__init__(name=name or spec.tag(), version="1.0.0",
                             description=f"FPR patches {spec}")
            self.spec = spec

    class _FprPatchesBase(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "FPR candidate patches (paper Section 3.1)."}
        BUILDER_CONFIGS = [PatchesConfig(PatchesSpec(), name="default")]

        def __init__(self, *, config=None, file_format="array_record", **kwargs):
            if isinstance(config, PatchesSpec):
                config = PatchesConfig(config)
            super().__init__(config=config, file_format=file_format, **kwargs)

        @property
        def spec(self) -> PatchesSpec:
            return self.builder_config.spec

        def _info(self):
            s = self.spec
            p = int(s.patch_size)
            return tfds.core.DatasetInfo(
                builder=self,
                description=__doc__.split("\n\n")[0],
                features=tfds.features.FeaturesDict({
                    "patch": tfds.features.Tensor(shape=(p, p, p),
                                                  dtype=np.uint8 if s.quantize else np.float32),
                    "label": tfds.features.ClassLabel(names=["non-nodule", "nodule"]),
                    "seriesuid": tfds.features.Text(),
                    "fold": tfds.features.Scalar(dtype=np.int32),
                    # float32: TFDS serialises floats as float32 (1e-5 mm here)
                    "center_xyz": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                }),
                supervised_keys=("patch", "label"),
                homepage="https://luna16.grand-challenge.org/",
            )

        def _dataset_root(self, dl_manager) -> str:
            raise NotImplementedError

        def _split_generators(self, dl_manager):
            root = self._dataset_root(dl_manager)
            s = self.spec
            ds = luna16.Luna16Dataset(root)
            if s.splits == "roles":
                plan = {"train": s.train_folds, "validation": s.val_folds, "test": s.test_folds}
                plan = {k: v for k, v in plan.items() if v}
                for name, folds in plan.items():
                    if not ds.uids(folds):  # TFDS cannot write an empty split
                        raise ConfigError(
                            f"{self.name}: split {name!r} (folds {folds}) has no scans under "
                            f"{root}; set train_folds/val_folds/test_folds to subsets present "
                            f"({sorted({ds.fold_of(u) for u in ds.uids()})}) or use an empty "
                            f"tuple to drop the split")
            else:
                plan = {f"fold{k}": (k,) for k in sorted({ds.fold_of(u) for u in ds.uids()})}
            return {name: self._generate_examples(root, folds) for name, folds in plan.items()}

        def _generate_examples(self, root, folds):
            s = self.spec
            yield from iter_fpr_examples(
                root, folds, patch_size=int(s.patch_size), spacing=float(s.spacing),
                hu_window=s.hu_window, neg_radius_mm=s.neg_radius_mm,
                max_neg_per_scan=s.max_neg_per_scan, quantize_uint8=s.quantize, seed=s.seed)

    class Luna16Patches(_FprPatchesBase):
        """LUNA16 FPR patches from a manual download (``manual_dir`` = the LUNA16 folder)."""

        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Download LUNA16 from https://luna16.grand-challenge.org/ and unpack it into "
            "one folder: subset0/ .. subset9/ (the .mhd/.raw scans), annotations.csv, "
            "candidates_V2.csv (and annotations_excluded.csv from evaluationScript/). Pass "
            "that folder as download_config=tfds.download.DownloadConfig(manual_dir=...)."
        )

        def _dataset_root(self, dl_manager) -> str:
            return check_manual_dir(os.fspath(dl_manager.manual_dir))

    class PhantomPatches(_FprPatchesBase):
        """Phantom FPR patches; the phantom is generated under ``<download_dir>/phantom_*``."""

        def _dataset_root(self, dl_manager) -> str:
            s = self.spec
            tag = (f"phantom_n{s.phantom_num_scans}_seed{s.phantom_seed}_"
                   f"scale{s.phantom_size_scale:g}_sub{s.phantom_num_subsets}_"
                   f"mv{s.phantom_max_voxels}").replace(".", "p")
            root = os.path.join(os.fspath(dl_manager.download_dir), tag)
            done = os.path.join(root, ".complete")
            if not os.path.exists(done):
                generate_dataset(root, s.phantom_num_scans, s.phantom_seed,
                                 size_scale=s.phantom_size_scale,
                                 num_subsets=s.phantom_num_subsets,
                                 max_voxels=s.phantom_max_voxels,
                                 overwrite=True)  # an unfinished earlier attempt
                with open(done, "w", encoding="utf-8") as f:
                    f.write("ok\n")
            return root


def check_manual_dir(root: str) -> str:
    """``root`` if it looks like a LUNA16 folder, else :class:`LUNA16FormatError` naming it."""
    missing = [] if os.path.exists(os.path.join(root, "annotations.csv")) \
        else ["annotations.csv"]
    if not any(os.path.exists(os.path.join(root, f))
               for f in ("candidates_V2.csv", "candidates.csv")):
        missing.append("candidates_V2.csv")
    if missing:
        raise LUNA16FormatError(
            f"{root}: LUNA16 manual folder lacks {missing}; download LUNA16 from "
            f"https://luna16.grand-challenge.org/ and unpack subset0..9, annotations.csv and "
            f"candidates_V2.csv there (nothing is downloaded automatically)")
    return root


def build(kind: str, data_dir: str, spec: PatchesSpec, *, manual_dir: str | None = None):
    """Build (if needed) and return the TFDS builder ``kind`` ("luna16" or "phantom")."""
    if tfds is None:  # pragma: no cover
        raise ConfigError("tensorflow-datasets is not installed; use fpr_split_arrays()")
    if kind == "luna16":
        if not manual_dir:
            raise ConfigError("data.kind='luna16' needs the manual LUNA16 folder (data.root)")
        check_manual_dir(os.fspath(manual_dir))
        b = Luna16Patches(config=spec, data_dir=data_dir)
        b.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    elif kind == "phantom":
        b = PhantomPatches(config=spec, data_dir=data_dir)
        b.download_and_prepare()
    else:
        raise ConfigError(f"data.kind must be 'luna16' or 'phantom', got {kind!r}")
    return b


def split_arrays(builder, split: str) -> dict:
    """A built split read through ``as_data_source`` (no TF) into stacked numpy arrays.

    Same layout as :func:`fpr_split_arrays`, sorted by (seriesuid, centre) so the order does
    not depend on TFDS's key-hash shuffling.
    """
    src = builder.as_data_source(split=split)
    n = len(src)
    rows = src.__getitems__(list(range(n))) if n else []
    ex = [{"patch": r["patch"], "label": int(r["label"]),
           "seriesuid": r["seriesuid"].decode() if isinstance(r["seriesuid"], bytes)
           else str(r["seriesuid"]), "fold": int(r["fold"]),
           "center_xyz": np.asarray(r["center_xyz"], np.float32)} for r in rows]
    s = builder.spec
    return _stack(ex, int(s.patch_size), bool(s.quantize))
