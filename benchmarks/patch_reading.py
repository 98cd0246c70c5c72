"""FPR batches from disk, host side: ``.npy`` records vs TFDS ArrayRecord vs memory (issue 29).

    python benchmarks/patch_reading.py [--n 2048] [--patch 64] [--batch 16] [--steps 20]
        [--repeats 3] [--depth 2] [--workers 2] [--readers memory,npy,tfds]
        [--loaders read,inline,prefetch,threads,grain] [--dir DIR] [--config paper]
        [--train-batch B] [--train-steps 3] [--skip-train] [--json PATH]

Data: ``--n`` synthetic ``--patch``^3 float16 patches, uniform in [0, 1] (float16: the dtype of
the patch sets on disk, ``nodulejax/data/patchstore.py``), and int32 labels, ``--pos-fraction``
of them positive, written once into a new folder (under ``--dir``, default the system's
temporary folder; removed at the end unless ``--keep``). Readers, each a lazy ``(N, P, P, P)``
float16 array indexed by row:

* ``memory``: the numpy array in memory.
* ``npy``: one ``.npy`` record file (``nodulejax.data.records.write_records``) read by row
  with positional reads (``records.RecordArray``: one ``readinto`` per run of consecutive
  rows, nothing kept mapped).
* ``mmap``: the same file as a memory map (``np.load(mmap_mode="r")``; fancy indexing copies
  the rows): the simplest reader, whose touched pages count in the process's RSS.
* ``tfds``: a TFDS dataset written by a minimal ``GeneratorBasedBuilder`` with
  ``file_format="array_record"`` (TFDS writes one ArrayRecord file per shard with
  ``group_size:1``: every record is its own chunk, readable alone), features ``patch``
  (``tfds.features.Tensor`` float16, ``Encoding.BYTES``: the raw bytes, the encoding TFDS
  recommends for large tensors; each record then zstd-compressed by ArrayRecord's default,
  ``writer_options`` in the JSON), ``label``, ``index``; shuffling disabled, so example ``i``
  is row ``i`` (checked). Read through TFDS's data-source API
  (``builder.as_data_source(split="train")``, ``__getitems__`` of the batch's rows),
  deserialisation and decoding included (:class:`TfdsRows`).

Batches are assembled as the trainers assemble them: ``nodulejax.train.augment.gather_batch``
over the baseline's two groups (positives, negatives: ``records.Subset`` of the reader),
``train.sampler.BalancedSampler`` 50/50 (paper Section 3.1), one indexing per group and batch,
the cube symmetry of ``data.patches.random_flip_rot`` drawn from each example's seed, float32
``(B, P, P, P)``. Loaders:

* ``read``: the batch's rows only (one sorted indexing of the reader, no symmetry, no cast),
  one thread: what the storage alone delivers.
* ``inline``: ``fn(step)`` in a loop, one thread.
* ``prefetch``: ``train.sampler.Prefetcher`` depth ``--depth``, one worker thread (as
  ``train.loop.fit`` feeds the step).
* ``threads``: ``Prefetcher`` with ``--workers`` threads, depth ``max(--depth, --workers)``.
* ``grain``: only where ``import grain`` works (it is not a project dependency): a
  ``grain.MapDataset`` over the batches' examples (the same rows and seeds, precomputed from
  the sampler), each example read alone, given its symmetry and cast in ``.map`` on
  ``--workers`` threads (``grain.ReadOptions``), ``IterDataset.batch``.

Reported per reader and loader: patches/s, the median over ``--repeats`` runs of ``--steps``
batches, each run after one untimed batch (thread start); the runs of one repeat read the same
steps in every reader and loader. Producers run alone: no train step competes for the cores.
``identical``: every reader, and Grain, gives bit-identical batches to the in-memory inline
ones (the first two steps). No ``jax.device_put``: host side only.

Page cache: the files are written just before, so the warm numbers read from the page cache.
``cold``: each file reader's files are then dropped from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` (needs no root: a file's clean pages only; the
resident fraction before and after is read with ``mincore``) and ``--steps`` new batches are
read inline (the ``mmap`` reader unmapped first and mapped anew: a live map pins its pages).
The disk is a virtual one, so the host's own cache may still serve those reads; the kernel's
readahead brings in more than the rows asked for (``resident_after``).

Train step (not with ``--skip-train``): the ``--config`` FPR network at ``--patch``^3 and
batch ``--train-batch`` (default ``--batch``: the config's ``fpr.batch_size``, paper 16), the
project's step (``common.fpr_train_step``: ``train.fpr.make_fpr_step``, Adam ``fpr.lr``)
jitted with the state donated and the batch split over the host CPU devices (one per core,
``runtime.devices``), as the trainers run it; compile and one warm step excluded, median of
``--train-steps`` steps: the patches/s that step consumes. ``reference_consumption``: the
same step on one H100 (benchmarks/RESULTS.md, GPU section), for scale.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import mmap
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata

import common
import numpy as np

if common.ROOT not in sys.path:
    sys.path.insert(0, common.ROOT)

from nodulejax.data.patches import random_flip_rot  # noqa: E402
from nodulejax.data.records import LazyRows, RecordArray, Subset, write_records  # noqa: E402
from nodulejax.train.augment import PLAIN, GroupSource, gather_batch  # noqa: E402
from nodulejax.train.sampler import BalancedSampler, Prefetcher  # noqa: E402

try:
    import tensorflow_datasets as tfds
except ImportError:  # pragma: no cover - a declared dependency
    tfds = None

READERS = ("memory", "npy", "mmap", "tfds")
LOADERS = ("read", "inline", "prefetch", "threads", "grain")
#: the FPR train step at 64^3, batch 16, on one H100 (benchmarks/RESULTS.md, "GPU (H100),
#: measured 2026-11-26": 11.80 / 15.20 steps/s), in patches/s
REFERENCE_CONSUMPTION = {
    "h100_float32_patches_per_s": 11.80 * 16,
    "h100_bfloat16_patches_per_s": 15.20 * 16,
    "source": "benchmarks/RESULTS.md, GPU (H100) 2026-11-26, FPR train step 64^3 batch 16",
}


# --------------------------------------------------------------------------- data
def make_patches(n: int, patch: int, *, seed: int = 0, pos_fraction: float = 0.125,
                 chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``x (n, P, P, P) float16`` uniform in [0, 1] and ``y (n,) int32`` labels with
    ``round(n * pos_fraction)`` positives (at least one of each class)."""
    if n < 2:
        raise ValueError(f"--n must be >= 2 (a positive and a negative), got {n}")
    rng = np.random.default_rng(seed)
    x = np.empty((n,) + (patch,) * 3, np.float16)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x[a:b] = rng.random((b - a,) + (patch,) * 3, dtype=np.float32)
    npos = min(n - 1, max(1, round(n * pos_fraction)))
    y = np.zeros(n, np.int32)
    y[rng.choice(n, npos, replace=False)] = 1
    return x, y


def write_npy(folder: str, x: np.ndarray, y: np.ndarray) -> dict:
    """``folder/patches.npy`` (``records.write_records``, 64 rows per write) and
    ``labels.npy``; returns the paths, seconds and bytes."""
    path = os.path.join(folder, "patches.npy")
    t = time.perf_counter()
    write_records(path, (x[a:a + 64] for a in range(0, len(x), 64)), x.shape[1:], x.dtype,
                  count=len(x))
    np.save(os.path.join(folder, "labels.npy"), y)
    return {"files": [path], "write_s": time.perf_counter() - t,
            "bytes": os.path.getsize(path)}


def _tfds_builder_class(shape: tuple, x: np.ndarray, y: np.ndarray):
    """A minimal TFDS builder of ``x`` / ``y`` (one ``train`` split, unshuffled)."""

    class SyntheticPatches(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Synthetic float16 FPR patches (benchmarks/patch_reading.py)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "benchmark data"}

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "patch": tfds.features.Tensor(shape=shape, dtype=np.float16,
                                                  encoding=tfds.features.Encoding.BYTES),
                    "label": tfds.features.Scalar(dtype=np.int32),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }),
                disable_shuffling=True,  # example i is row i
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(len(x)):
                yield i, {"patch": x[i], "label": int(y[i]), "index": i}

    return SyntheticPatches


def write_tfds(folder: str, x: np.ndarray, y: np.ndarray):
    """Build the TFDS ArrayRecord dataset under ``folder/tfds``; returns (builder, info)."""
    if tfds is None:  # pragma: no cover
        raise RuntimeError("tensorflow-datasets is not installed")
    tfds.disable_progress_bar()
    data_dir = os.path.join(folder, "tfds")
    t = time.perf_counter()
    builder = _tfds_builder_class(tuple(x.shape[1:]), x, y)(data_dir=data_dir,
                                                           file_format="array_record")
    builder.download_and_prepare()
    write_s = time.perf_counter() - t
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(data_dir) for f in fs
                   if ".array_record" in f)
    src = builder.as_data_source(split="train")
    if len(src) != len(x):
        raise RuntimeError(f"TFDS wrote {len(src)} examples, expected {len(x)}")
    check = sorted({0, len(x) - 1, *np.random.default_rng(1).integers(0, len(x), 8).tolist()})
    got = [int(e["index"]) for e in src.__getitems__(check)]
    if got != check:
        raise RuntimeError(f"TFDS example order differs from the rows: {check} -> {got}")
    return builder, {"files": files, "write_s": write_s,
                     "bytes": sum(os.path.getsize(f) for f in files),
                     "writer_options": _writer_options(files[0]) if files else None}


def _writer_options(path: str) -> str | None:
    """The options an ArrayRecord file was written with (TFDS: ``group_size:1`` and
    array_record's default ``zstd:3`` compression)."""
    try:
        from array_record.python import array_record_module

        reader = array_record_module.ArrayRecordReader(path)
        try:
            return reader.writer_options_string()
        finally:
            reader.close()
    except Exception:  # noqa: BLE001 - informative only
        return None


class TfdsRows(LazyRows):
    """The ``patch`` feature of a TFDS data source as a lazy ``(N, ...)`` array: the rows of
    a read come from one ``source.__getitems__`` (read, deserialise, decode)."""

    def __init__(self, source, row_shape: tuple, dtype, name: str = "tfds"):
        self.source = source
        self.shape = (len(source),) + tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.name = name

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        for k, ex in enumerate(self.source.__getitems__(rows.tolist())):
            out[k] = ex["patch"]


def open_readers(names, x: np.ndarray, files: dict, builder=None) -> dict:
    """name -> lazy ``(N, P, P, P)`` float16 array, for ``names`` of :data:`READERS`."""
    out = {}
    for name in names:
        if name == "memory":
            out[name] = x
        elif name == "npy":
            out[name] = RecordArray(files["npy"]["files"][0])
        elif name == "mmap":
            out[name] = np.load(files["npy"]["files"][0], mmap_mode="r")
        elif name == "tfds":
            out[name] = TfdsRows(builder.as_data_source(split="train"), x.shape[1:], x.dtype)
        else:
            raise ValueError(f"unknown reader {name!r} (expected one of {READERS})")
    return out


# --------------------------------------------------------------------------- batches
class Pipeline:
    """The baseline FPR batches of one reader: ``fn(step) -> (x (B, P, P, P) float32,
    y (B,) int32)`` as the trainers build them (module docstring)."""

    def __init__(self, reader, y: np.ndarray, batch: int, patch: int, seed: int = 0):
        self.reader, self.batch, self.patch = reader, int(batch), int(patch)
        self.groups = (np.flatnonzero(y == 1), np.flatnonzero(y == 0))
        self.labels = (1, 0)
        self.sources = [GroupSource(name, Subset(reader, g), lab, PLAIN, len(g))
                        for name, g, lab in zip(("pos_real", "neg_real"), self.groups,
                                                self.labels, strict=True)]
        self.sampler = BalancedSampler([len(g) for g in self.groups], [0.5, 0.5], batch, seed)

    def fn(self, step: int):
        b = gather_batch(self.sources, self.sampler.batch(step), augment=True,
                         patch_size=self.patch)
        return b["x"], b["y"]

    def examples(self, start: int, stop: int):
        """(rows, seeds, labels) of every example of batches ``start .. stop - 1``, in order."""
        rows, seeds, labels = [], [], []
        for s in range(start, stop):
            b = self.sampler.batch(s)
            for g, i, sd in zip(b.group, b.index, b.seed, strict=True):
                rows.append(int(self.groups[g][i]))
                seeds.append(int(sd))
                labels.append(self.labels[g])
        return np.array(rows, np.int64), np.array(seeds, np.uint32), np.array(labels, np.int32)

    def read(self, step: int) -> np.ndarray:
        """The rows of batch ``step`` alone, one sorted indexing (no symmetry, no cast)."""
        rows = self.examples(step, step + 1)[0]
        return self.reader[np.sort(rows)]


def grain_available() -> bool:
    try:
        import grain  # noqa: F401
    except ImportError:
        return False
    return True


def grain_batches(pipe: Pipeline, start: int, stop: int, *, workers: int, depth: int):
    """Batches ``start .. stop - 1`` of ``pipe`` by Grain: per-example read, symmetry and cast
    on ``workers`` threads, then ``IterDataset.batch`` (module docstring)."""
    import grain

    rows, seeds, labels = pipe.examples(start, stop)
    reader = pipe.reader

    def example(k):
        p = reader[int(rows[k])]
        x = random_flip_rot(p, np.random.default_rng(int(seeds[k])))
        return {"x": x.astype(np.float32), "y": labels[k]}

    opts = grain.ReadOptions(num_threads=workers, prefetch_buffer_size=depth * pipe.batch)
    ds = grain.MapDataset.range(len(rows)).map(example).to_iter_dataset(opts).batch(pipe.batch)
    for b in ds:
        yield b["x"], b["y"]


def iterate(pipe: Pipeline, loader: str, start: int, stop: int, *, depth: int, workers: int):
    """The batches (or, for ``read``, the row blocks) ``start .. stop - 1`` by ``loader``."""
    if loader == "read":
        yield from (pipe.read(s) for s in range(start, stop))
    elif loader == "inline":
        yield from (pipe.fn(s) for s in range(start, stop))
    elif loader in ("prefetch", "threads"):
        w = 1 if loader == "prefetch" else workers
        with Prefetcher(pipe.fn, start, stop, depth=max(depth, w), num_workers=w) as it:
            yield from it
    elif loader == "grain":
        yield from grain_batches(pipe, start, stop, workers=workers, depth=depth)
    else:
        raise ValueError(f"unknown loader {loader!r} (expected one of {LOADERS})")


def time_loader(pipe: Pipeline, loader: str, start: int, steps: int, *, depth: int,
                workers: int) -> float:
    """Patches/s of ``steps`` batches after one untimed batch (``start``)."""
    it = iterate(pipe, loader, start, start + steps + 1, depth=depth, workers=workers)
    next(it)
    t = time.perf_counter()
    n = sum(1 for _ in it)
    dt = time.perf_counter() - t
    if n != steps:
        raise RuntimeError(f"{loader}: {n} batches, expected {steps}")
    return steps * pipe.batch / dt


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def check_identical(pipes: dict, x: np.ndarray, steps=(0, 1), *, with_grain: bool,
                    workers: int = 2) -> dict:
    """Whether every reader (inline, ``read``) and Grain give the in-memory batches bit for
    bit: ``{"npy": True, "npy_read": True, "grain(npy)": True, ...}``."""
    twin = _memory_twin(next(iter(pipes.values())), x)
    ref = [twin.fn(s) for s in steps]
    out = {}
    for name, pipe in pipes.items():
        got = [pipe.fn(s) for s in steps]
        out[name] = all(same_bits(g[0], r[0]) and same_bits(g[1], r[1])
                        for g, r in zip(got, ref, strict=True))
        out[f"{name}_read"] = all(
            same_bits(pipe.read(s), x[np.sort(pipe.examples(s, s + 1)[0])]) for s in steps)
        if with_grain:
            got = list(grain_batches(pipe, min(steps), max(steps) + 1, workers=workers,
                                     depth=2))
            out[f"grain({name})"] = all(same_bits(g[0], r[0]) and same_bits(g[1], r[1])
                                        for g, r in zip(got, ref, strict=True))
    return out


def _memory_twin(pipe: Pipeline, x: np.ndarray) -> Pipeline:
    """``pipe`` with the in-memory array as its reader (same labels, batch, seed)."""
    y = np.zeros(len(x), np.int32)
    y[pipe.groups[0]] = 1
    return Pipeline(x, y, pipe.batch, pipe.patch, pipe.sampler.seed)


# --------------------------------------------------------------------------- page cache
def evict(paths) -> bool:
    """Drop the files' clean pages from the page cache (``fsync`` then
    ``posix_fadvise(DONTNEED)``; no root needed). False where the OS does not offer it."""
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    except OSError:
        return False
    return True


def resident_fraction(paths) -> float | None:
    """Fraction of the files' pages in the page cache (``mincore`` of a read-only mapping);
    None where it cannot be asked (not Linux, no libc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    failed = ctypes.c_void_p(-1).value
    page, resident, total = mmap.PAGESIZE, 0, 0
    for p in paths:
        size = os.path.getsize(p)
        if not size:
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, failed):
                return None
            try:
                n = -(-size // page)
                vec = (ctypes.c_ubyte * n)()
                if libc.mincore(addr, size, vec) != 0:
                    return None
                resident += int((np.frombuffer(vec, np.uint8) & 1).sum())
                total += n
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
    return resident / total if total else None


# --------------------------------------------------------------------------- train step
def train_consumption(config: str, patch: int, batch: int, steps: int,
                      impl: str = "auto") -> dict:
    """Seconds per FPR train step (median of ``steps`` after compile and one warm step) and
    the patches/s it consumes (module docstring)."""
    import jax
    import jax.numpy as jnp
    import optax

    from nodulejax.models import denseunet
    from nodulejax.runtime import devices

    cfg = common.load_config(config)
    model = denseunet.from_config(cfg.fpr, conv_impl=impl)
    rng = np.random.default_rng(1)
    x = rng.random((batch,) + (patch,) * 3 + (1,), dtype=np.float32)
    y = (np.arange(batch) % 2).astype(np.float32)
    small = 2 ** (len(model.block_layers) - 1)
    v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(x[:1, :small, :small, :small]))
    tx = optax.adam(float(cfg.fpr.lr))
    state, data = common.fpr_train_state(v, tx), common.fpr_batch(x, y)
    mesh = devices.mesh_for(batch)
    if mesh is not None:
        state, data = devices.replicate(state, mesh), devices.put_batch(data, mesh)
    else:
        state, data = jax.device_put((state, data))
    t = time.perf_counter()
    step = jax.jit(common.fpr_train_step(model, tx), donate_argnums=(0,)).lower(
        state, data).compile()
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        state, loss = step(state, data)
        loss.block_until_ready()
        times.append(time.perf_counter() - t)
    s = statistics.median(times[1:])
    return {"config": config, "patch": patch, "batch": batch, "steps": steps,
            "devices": mesh.size if mesh is not None else 1, "conv_impl": impl,
            "compile_s": compile_s, "first_step_s": times[0], "step_s": times[1:],
            "median_step_s": s, "patches_per_s": batch / s}


# --------------------------------------------------------------------------- report
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("numpy", "jax", "jaxlib", "flax", "tensorflow-datasets", "array-record",
                 "grain"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _print_table(res: dict) -> None:
    print(f"\n{res['n']} patches {res['patch']}^3 float16, batch {res['batch']}, "
          f"{res['steps']} batches x {res['repeats']} repeats, {res['workers']} workers; "
          f"{res['cpu_model']}, {res['cores']} cores, load {res['loadavg_1min_before']:.1f}")
    for name, f in res["files"].items():
        print(f"  {name}: {f['bytes'] / 2**20:.1f} MiB written in {f['write_s']:.1f} s")
    loaders = [lo for lo in LOADERS if any(lo in r for r in res["throughput"].values())]
    print(f"{'patches/s':<10}" + "".join(f"{lo:>11}" for lo in loaders) + f"{'cold':>11}")
    for name, row in res["throughput"].items():
        cells = [f"{row[lo]['patches_per_s']:11.1f}" if lo in row else f"{'-':>11}"
                 for lo in loaders]
        cold = res["cold"].get(name, {}).get("patches_per_s")
        print(f"{name:<10}" + "".join(cells) + (f"{cold:11.1f}" if cold else f"{'-':>11}"))
    print(f"identical to memory/inline (bit for bit): {res['identical']}")
    if res.get("train"):
        t = res["train"]
        print(f"FPR train step ({t['config']}, {t['patch']}^3, batch {t['batch']}, "
              f"{t['devices']} CPU devices): {t['median_step_s']:.2f} s/step = "
              f"{t['patches_per_s']:.2f} patches/s consumed (compile {t['compile_s']:.0f} s)")
    r = res["reference_consumption"]
    print(f"for scale, one H100 consumes {r['h100_float32_patches_per_s']:.0f} (fp32) / "
          f"{r['h100_bfloat16_patches_per_s']:.0f} (bf16) patches/s ({r['source']})")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2048, help="patches (2048 at 64^3: 1 GiB)")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=0, help="default: the config's fpr.batch_size")
    ap.add_argument("--pos-fraction", type=float, default=0.125)
    ap.add_argument("--steps", type=int, default=20, help="timed batches per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--readers", default=",".join(READERS))
    ap.add_argument("--loaders", default=",".join(LOADERS))
    ap.add_argument("--no-cold", dest="cold", action="store_false")
    ap.add_argument("--dir", default="", help="where the data folder goes (default: tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument("--config", default="paper", help="demo | paper | path.py[:arg]")
    ap.add_argument("--train-batch", type=int, default=0, help="default: --batch")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--impl", default="auto", help="conv lowering of the train step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="default: benchmarks/results/"
                    "patch_reading_<date>.json")
    a = ap.parse_args(argv)
    readers = [r.strip() for r in a.readers.split(",") if r.strip()]
    loaders = [lo.strip() for lo in a.loaders.split(",") if lo.strip()]
    for r in readers:
        if r not in READERS:
            ap.error(f"--readers: unknown {r!r} (choose from {READERS})")
    for lo in loaders:
        if lo not in LOADERS:
            ap.error(f"--loaders: unknown {lo!r} (choose from {LOADERS})")
    notes = []
    if "grain" in loaders and not grain_available():
        loaders.remove("grain")
        notes.append("grain not importable: no grain loader (pip install grain to add it)")

    from nodulejax.runtime import devices

    if not a.skip_train:
        try:  # before anything starts JAX's backends
            devices.configure_cpu_devices("auto")
        except Exception as e:  # noqa: BLE001 - JAX already started elsewhere (in-process use)
            notes.append(f"CPU devices not configured: {e}")
    cfg = common.load_config(a.config)
    batch = a.batch or int(cfg.fpr.batch_size)
    load_before = os.getloadavg()[0]

    x, y = make_patches(a.n, a.patch, seed=a.seed, pos_fraction=a.pos_fraction)
    if a.dir:
        os.makedirs(a.dir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="patch_reading_", dir=a.dir or None)
    try:
        files, builder = {}, None
        if "npy" in readers or "mmap" in readers:
            files["npy"] = write_npy(folder, x, y)
        if "tfds" in readers:
            builder, files["tfds"] = write_tfds(folder, x, y)
        pipes = {name: Pipeline(r, y, batch, a.patch, a.seed)
                 for name, r in open_readers(readers, x, files, builder).items()}
        identical = check_identical(pipes, x, with_grain="grain" in loaders,
                                    workers=a.workers)

        runs = {name: {lo: [] for lo in loaders} for name in pipes}
        for rep in range(a.repeats):  # the loaders in turn, so a load change hits them all
            start = 2 + rep * (a.steps + 1)
            for name, pipe in pipes.items():
                for lo in loaders:
                    runs[name][lo].append(time_loader(pipe, lo, start, a.steps,
                                                      depth=a.depth, workers=a.workers))
        throughput = {name: {lo: {"patches_per_s": statistics.median(v), "runs": v}
                             for lo, v in row.items()} for name, row in runs.items()}

        cold = {}
        if a.cold:
            start = 2 + a.repeats * (a.steps + 1)
            # a live memory map pins the pages it touched in the page cache: unmap it first
            had_mmap = pipes.pop("mmap", None) is not None
            gc.collect()
            for name in [n for n in readers if n != "memory"]:
                if name == "mmap" and not had_mmap:
                    continue
                paths = files["npy" if name == "mmap" else name]["files"]
                ok = evict(paths)
                before = resident_fraction(paths)
                pipe = pipes.get(name) or Pipeline(
                    open_readers([name], x, files, builder)[name], y, batch, a.patch, a.seed)
                pps = time_loader(pipe, "inline", start, a.steps, depth=a.depth,
                                  workers=a.workers)
                del pipe
                gc.collect()
                cold[name] = {"evicted": ok, "resident_before": before,
                              "resident_after": resident_fraction(paths),
                              "patches_per_s": pps, "loader": "inline"}
    finally:
        if a.keep:
            notes.append(f"data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    train = None
    if not a.skip_train:
        train = train_consumption(a.config, a.patch, a.train_batch or batch, a.train_steps,
                                  a.impl)
    import jax

    date = datetime.date.today().isoformat()
    res = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/patch_reading.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "device": str(jax.devices()[0]), "jax_devices": len(jax.devices()),
        "host": devices.host_cpu(),
        "cpu_model": _cpu_model(), "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "versions": _versions(),
        "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
        "n": a.n, "patch": a.patch, "dtype_on_disk": "float16", "batch": batch,
        "steps": a.steps, "repeats": a.repeats, "depth": a.depth, "workers": a.workers,
        "readers": readers, "loaders": loaders, "data_bytes": int(x.nbytes),
        "files": {k: {kk: vv for kk, vv in v.items() if kk != "files"} | {
            "count": len(v["files"])} for k, v in files.items()},
        "identical": identical, "throughput": throughput, "cold": cold, "train": train,
        "reference_consumption": REFERENCE_CONSUMPTION, "notes": notes,
    }
    _print_table(res)
    for note in notes:
        print("note:", note)
    out = a.json or os.path.join(common.HERE, "results", f"patch_reading_{date}.json")
    from nodulejax.runtime.files import atomic_write_json

    atomic_write_json(out, res, indent=1)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
