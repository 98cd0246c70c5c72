"""20-step L-inf PGD throughput and FPR training-step speed: JAX vs PyTorch, same weights.

The FPR network (DenseUNet3D, configs'
``c.fpr``) is initialised once in JAX; its params are saved and loaded into the PyTorch twin
(``benchmarks/torch_denseunet.py``), so both frameworks run the same network on the same batch.
Measured, each in its own subprocess (clean peak memory, a torch.compile failure cannot take
the run down), one after the other in one command:

* ``pgd``:   ``nodulejax.adversarial.pgd.pgd`` (loop="auto": a host loop over one jitted step
  on CPU, ``fori_loop`` on GPU) with the FPR's own loss (``nodulejax.losses.fpr.fpr_loss``,
  label 1), eps 0.03, step 0.01, random start, bounds [0, 1]; PyTorch eager and
  ``torch.compile`` run the same algorithm (``torch_denseunet.torch_pgd_linf``).
  Reported as patches/s = batch / seconds per ``--steps``-step attack.
* ``train``: one FPR training step (forward, backward over parameters, Adam lr 1e-3 update)
  on the mean FPR loss (``common.loss_train_step``: the algorithm of the PyTorch twin, in
  ``--dtype``); steps/s and patches/s.

JAX runs with one XLA CPU device per core (``--cpu-devices auto``, :mod:`nodulejax.runtime.devices`)
and splits the batch over them (``--shard auto``: PGD's ``shard="auto"``, the train step data
parallel with the state replicated); ``--cpu-devices 1`` / ``--shard none`` give the
one-device numbers. PyTorch uses its intra-op threads (one per core).

Warm-up (compilation) excluded; the median of ``--repeats`` timed repeats. ``--rounds R``
runs the workers in turn R times (jax, eager, compile, jax, ...) and reports the median over
rounds and each round's JAX / PyTorch ratios (one round = one machine load). Peak memory,
measured the same way for every framework: the worker process's own RSS high-water mark
(``VmHWM`` of ``/proc/self/status``; ``peak_rss_mb``), and on GPU in addition the device
allocator's peak (JAX ``memory_stats()['peak_bytes_in_use']``,
``torch.cuda.max_memory_allocated()``; ``peak_device_mb``). ``rss_after_import_mb`` is the
worker's RSS once its framework and the model are loaded, before any step runs.

Compilation caches: by default (``--compilation-cache off``) every worker compiles cold, JAX
without its persistent cache and torch.compile without Inductor's on-disk caches (which
PyTorch enables by default under /tmp). ``--compilation-cache DIR`` keeps both frameworks'
compiled programs under DIR; run the same command twice and the second run's warm-ups and
peaks are the warm-cache ones (the timed calls do not depend on it).

Usage::

    python benchmarks/pgd_throughput.py --config demo --batch 16 --steps 20 --json out.json
    python benchmarks/pgd_throughput.py --config paper --size 64 --batch 2 --steps 20 \
        --what pgd,train --impl auto --dtype float32 --json out64.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import common
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EPS, STEP = 0.03, 0.01


# --- shared helpers --------------------------------------------------------------------------
def _unflatten(flat):
    """The params tree from its dotted paths (``runtime.config_tools.flatten``, as ``_setup``
    saves them); here, not in the library, so the PyTorch workers do not import JAX."""
    tree = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


_status_mb, _reset_peak_rss, _peak_rss_mb = (common.status_mb, common.reset_peak_rss,
                                             common.peak_rss_mb)


def release_freed() -> bool:
    """``nodulejax.runtime.memory.release_freed`` (glibc ``malloc_trim(0)``), loaded by path:
    importing ``nodulejax.runtime`` would load JAX into the PyTorch workers' memory."""
    if "release_freed" not in _MEMORY:
        spec = importlib.util.spec_from_file_location(
            "_nodulejax_memory", os.path.join(ROOT, "nodulejax", "runtime", "memory.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MEMORY["release_freed"] = mod.release_freed
    return _MEMORY["release_freed"]()


_MEMORY: dict = {}


def _timeit(fn, repeats: int) -> dict:
    """Warm-up call, then ``repeats`` timed calls. Memory: the RSS before, the peak RSS of the
    warm-up (compilation included) and of the timed calls alone (``steady_peak_rss_mb``).
    Between the two, freed heap pages go back to the OS (``runtime.memory.release_freed``)."""
    before = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    fn()  # warm-up: compilation / autotuning / allocator
    warm = time.perf_counter() - t0
    warm_peak = _status_mb("VmHWM") if reset else None
    release_freed()  # every framework, as the library's training loop after its first step
    reset = _reset_peak_rss()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"warmup_s": warm, "times_s": ts, "median_s": statistics.median(ts), "min_s": min(ts),
            "rss_before_mb": before, "warmup_peak_rss_mb": warm_peak,
            "steady_peak_rss_mb": _status_mb("VmHWM") if reset else None}


def _cache_dir(a, framework: str) -> str | None:
    """``--compilation-cache DIR``'s folder for ``framework``, or None when "off"."""
    if a.compilation_cache.strip().lower() in ("", "off", "none"):
        return None
    return os.path.join(os.path.abspath(a.compilation_cache), framework)


# --- JAX worker ------------------------------------------------------------------------------
def _jax_worker(a, spec) -> dict:
    sys.path.insert(0, ROOT)
    from nodulejax.runtime import devices

    devices.configure_cpu_devices(a.cpu_devices)  # before JAX starts its backends
    from nodulejax.runtime import compilation

    cache = _cache_dir(a, "jax")
    compilation.configure_compilation_cache(cache or "off")  # before the first compilation
    import jax
    import jax.numpy as jnp
    import optax

    from nodulejax.adversarial.pgd import pgd
    from nodulejax.models import denseunet
    from nodulejax.models.layers import resolve_conv_impl

    cfg = common.load_config(a.config)
    model = denseunet.from_config(cfg.fpr, conv_impl=a.impl)
    dt = jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32
    params = _unflatten(dict(np.load(spec["params"])))
    variables = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dt), {"params": params})
    x = jnp.asarray(np.load(spec["x"]))
    labels = jnp.ones((x.shape[0],), jnp.float32)
    loss_fn = common.fpr_attack_loss(model, dt)  # one object for the run: pgd's jit cache key

    mesh = devices.mesh_for(x.shape[0]) if a.shard == "auto" else None
    size = x.shape[1:4]  # "auto" on CPU picks per layer: record the choice at full size
    res = {"impl": a.impl if a.impl != "auto" else f"auto ({resolve_conv_impl('auto', size, 28)}"
           f" at {size[0]}^3 from 16 channels, {resolve_conv_impl('auto')} elsewhere)",
           "backend": jax.default_backend(),
           "devices": jax.local_device_count(), "batch_sharded_over": mesh.size if mesh else 1}
    res["rss_after_import_mb"] = _status_mb("VmRSS")
    key = jax.random.PRNGKey(0)
    if "pgd" in a.what:
        fn = lambda: pgd(
            loss_fn, x, key, eps=EPS, step_size=STEP, steps=a.steps, loss_args=(variables, labels)
        ).block_until_ready()
        res["pgd"] = _timeit(fn, a.repeats)
    if "train" in a.what:
        opt = optax.adam(1e-3)
        step = jax.jit(common.loss_train_step(loss_fn, opt),
                       donate_argnums=(0, 1) if a.donate else ())
        state = {"v": variables, "s": opt.init(variables)}
        ytrain = (jnp.arange(x.shape[0]) % 2).astype(jnp.float32)
        xtrain = x
        if mesh is not None:  # data parallel: batch split over the devices, state replicated
            state = devices.replicate(state, mesh)
            xtrain, ytrain = devices.put_batch((x, ytrain), mesh)

        def fn():
            state["v"], state["s"], loss = step(state["v"], state["s"], xtrain, ytrain)
            loss.block_until_ready()

        res["train"] = _timeit(fn, a.repeats)
    res["peak_rss_mb"] = _peak_rss_mb()
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        res["peak_device_mb"] = stats.get("peak_bytes_in_use", 0) / 2**20
        res["device_kind"] = dev.device_kind
    return res


# --- PyTorch worker --------------------------------------------------------------------------
def _torch_worker(a, spec, compiled: bool) -> dict:
    sys.path.insert(0, HERE)
    cache = _cache_dir(a, "torchinductor")  # read by Inductor at import
    for var in ("TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        os.environ[var] = "1" if cache else "0"
    if cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    import torch
    import torch_denseunet as td

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dt = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
    params = _unflatten(dict(np.load(spec["params"])))
    model = td.load_flax_params(td.TorchDenseUNet3D(spec["hparams"]), params).to(dev, dt)
    x = td.to_torch_input(np.load(spec["x"])).to(dev)
    labels = torch.ones(x.shape[0], device=dev)
    head = spec["hparams"]["head"]
    res = {"device": dev, "threads": torch.get_num_threads(),
           "rss_after_import_mb": _status_mb("VmRSS")}
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    net = model
    if compiled:
        try:
            net = torch.compile(model)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            return {"error": f"{type(e).__name__}: {e}"[:500]}

    def fwd(xb):
        return net(xb.to(dt)).float()

    if "pgd" in a.what:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

        def loss_grad(xb, y):
            xb = xb.detach().requires_grad_(True)
            loss = td.torch_fpr_loss(fwd(xb), y, head).sum()
            (g,) = torch.autograd.grad(loss, xb)
            return g

        gen = torch.Generator().manual_seed(0)

        def fn():
            td.torch_pgd_linf(
                loss_grad, x, labels, eps=EPS, step_size=STEP, steps=a.steps, generator=gen
            )
            sync()

        try:
            res["pgd"] = _timeit(fn, a.repeats)
        except Exception as e:  # noqa: BLE001
            res["pgd"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        for p in model.parameters():
            p.requires_grad_(True)
    if "train" in a.what:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ytrain = (torch.arange(x.shape[0], device=dev) % 2).float()

        def fn():
            opt.zero_grad(set_to_none=True)
            loss = td.torch_fpr_loss(fwd(x), ytrain, head).mean()
            loss.backward()
            opt.step()
            loss.item()
            sync()

        try:
            res["train"] = _timeit(fn, a.repeats)
        except Exception as e:  # noqa: BLE001
            res["train"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    res["peak_rss_mb"] = _peak_rss_mb()
    if dev == "cuda":
        res["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
        res["device_kind"] = torch.cuda.get_device_name(0)
    return res


# --- parent: set up, run workers, report ----------------------------------------------------
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("jax", "jaxlib", "flax", "torch"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def _setup(a, tmp: str) -> dict:
    sys.path.insert(0, ROOT)
    import jax

    from nodulejax.models import denseunet
    from nodulejax.models.layers import count_macs
    from nodulejax.runtime.config_tools import flatten

    cfg = common.load_config(a.config)
    size = a.size or int(cfg.fpr.patch_size)
    model = denseunet.from_config(cfg.fpr, conv_impl="xla3d")
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (a.batch, size, size, size, 1)))
    # params do not depend on the patch size: init at the smallest valid cube (a 64^3 init
    # compiles for minutes on CPU)
    small = 2 ** (len(model.block_layers) - 1)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, small, small, small, 1)))
    np.savez(os.path.join(tmp, "params.npz"), **flatten(dict(variables["params"])))
    np.save(os.path.join(tmp, "x.npy"), x)
    mac = count_macs(model, x[:1])
    sys.path.insert(0, HERE)
    hp = {
        "init_features": int(model.init_features),
        "growth": [model._growth(i) for i in range(len(model.block_layers))],
        "block_layers": [int(b) for b in model.block_layers],
        "compression": float(model.compression),
        "cls_hidden": int(model.cls_hidden),
        "head": str(model.head),
        "norm_groups": int(model.norm_groups),
        "up_mode": str(model.up_mode),
    }
    return {
        "params": os.path.join(tmp, "params.npz"),
        "x": os.path.join(tmp, "x.npy"),
        "hparams": hp,
        "size": size,
        "params_count": mac["params"],
        "gmacs_per_patch": mac["macs"] / 1e9,
    }


def _run_worker(a, spec, which: str, tmp: str) -> dict:
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    out_path = os.path.join(tmp, f"{which}.json")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_worker",
        which,
        "--_spec",
        spec_path,
        "--_out",
        out_path,
    ] + a._argv
    print(f"[{time.strftime('%H:%M:%S')}] {which} ...", flush=True)
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.worker_timeout)
    except subprocess.TimeoutExpired:
        print(f"  {which} timed out after {a.worker_timeout} s", flush=True)
        return {"error": f"worker timed out after {a.worker_timeout} s"}
    if p.returncode != 0 or not os.path.exists(out_path):
        tail = (p.stderr or p.stdout or "")[-800:]
        print(f"  {which} failed (rc {p.returncode}): {tail}", flush=True)
        return {"error": f"worker rc {p.returncode}: {tail}"}
    with open(out_path) as f:
        res = json.load(f)
    print(f"  done in {time.time() - t0:.0f} s", flush=True)
    return res


def _rate(r, what, batch):
    m = (r or {}).get(what) or {}
    if "median_s" not in m:
        return None
    return batch / m["median_s"]


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _summarise(rounds: list, batch: int, what) -> dict:
    """Per framework: the median over rounds of each round's rate and peak memory; the
    JAX / PyTorch ratios of each round (same round = same machine load) and their median."""
    out = {}
    fws = ("jax", "torch_eager", "torch_compile")
    for fw in fws:
        rs = [rd[fw] for rd in rounds if fw in rd]
        if not rs:
            continue
        out[f"{fw}_patches_per_s"] = _median([_rate(r, "pgd", batch) for r in rs])
        out[f"{fw}_train_steps_per_s"] = _median([_rate(r, "train", 1) for r in rs])
        out[f"{fw}_peak_rss_mb"] = _median([r.get("peak_rss_mb") for r in rs])
        out[f"{fw}_peak_device_mb"] = _median([r.get("peak_device_mb") for r in rs])
        out[f"{fw}_peak_mb"] = out[f"{fw}_peak_device_mb"] or out[f"{fw}_peak_rss_mb"]
        if out[f"{fw}_patches_per_s"] is None and "pgd" in what:
            r = rs[0]
            out[f"{fw}_error"] = r.get("error") or (r.get("pgd") or {}).get("error")
    ratios = {}
    for other in fws[1:]:
        for name, fn in (("pgd", lambda r: _rate(r, "pgd", batch)),
                         ("train", lambda r: _rate(r, "train", 1)),
                         ("peak_mb", lambda r: r.get("peak_device_mb") or r.get("peak_rss_mb"))):
            per = []
            for rd in rounds:
                j, o = fn(rd.get("jax", {})), fn(rd.get(other, {}))
                per.append(j / o if j and o else None)
            if any(v is not None for v in per):
                ratios[f"jax_over_{other}_{name}"] = {"per_round": per, "median": _median(per)}
    out["ratios"] = ratios
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("demo", "paper"), default="demo")
    ap.add_argument("--size", type=int, default=0, help="patch side (default: config's)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the frameworks' workers in turn this many times")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--impl", choices=("auto", "xla3d", "2d", "2dcat"), default="auto")
    ap.add_argument("--what", default="pgd,train")
    ap.add_argument("--frameworks", default="jax,torch_eager,torch_compile")
    ap.add_argument("--no-donate", dest="donate", action="store_false")
    ap.add_argument("--cpu-devices", default="auto",
                    help="JAX host CPU devices ('auto' = one per core; nodulejax.runtime.devices)")
    ap.add_argument("--shard", choices=("auto", "none"), default="auto",
                    help="JAX: split the batch over the devices (pgd shard=, data-parallel train)")
    ap.add_argument("--compilation-cache", default="off",
                    help="'off' (default): every worker compiles cold, JAX without its "
                    "persistent cache and torch.compile without Inductor's FX-graph / "
                    "autograd caches; DIR: both frameworks keep their compiled programs under "
                    "DIR (jax/, torchinductor/), so a second run with the same DIR measures "
                    "warm-cache warm-ups and peaks")
    ap.add_argument("--worker-timeout", type=int, default=1800)
    ap.add_argument("--json", default="")
    ap.add_argument("--_worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--_spec", default="", help=argparse.SUPPRESS)
    ap.add_argument("--_out", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.what = [w.strip() for w in a.what.split(",") if w.strip()]

    if a._worker:
        with open(a._spec) as f:
            spec = json.load(f)
        if a._worker == "jax":
            res = _jax_worker(a, spec)
        else:
            res = _torch_worker(a, spec, compiled=a._worker == "torch_compile")
        res["loadavg_1min"] = os.getloadavg()[0]
        with open(a._out, "w", encoding="utf-8") as f:
            json.dump(res, f)
        return 0

    a._argv = [
        "--config",
        a.config,
        "--size",
        str(a.size),
        "--batch",
        str(a.batch),
        "--steps",
        str(a.steps),
        "--repeats",
        str(a.repeats),
        "--dtype",
        a.dtype,
        "--impl",
        a.impl,
        "--what",
        ",".join(a.what),
        "--cpu-devices",
        str(a.cpu_devices),
        "--shard",
        a.shard,
        "--compilation-cache",
        a.compilation_cache,
    ] + ([] if a.donate else ["--no-donate"])
    frameworks = [f.strip() for f in a.frameworks.split(",") if f.strip()]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = _setup(a, tmp)
        for _ in range(a.rounds):  # the frameworks in turn, so a load change hits them all
            rounds.append({fw: _run_worker(a, spec, fw, tmp) for fw in frameworks})
    runs = rounds[0]
    b = a.batch
    sys.path.insert(0, ROOT)
    from nodulejax.runtime.devices import host_cpu  # the parent only: workers import on their own
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": host_cpu(),
        "accelerator": next(
            (r.get("device_kind") for r in runs.values() if r.get("device_kind")), None
        ),
        "versions": _versions(),
        "command": "python benchmarks/pgd_throughput.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "config": a.config,
        "size": spec["size"],
        "batch": b,
        "steps": a.steps,
        "eps": EPS,
        "step_size": STEP,
        "dtype": a.dtype,
        "repeats": a.repeats,
        "rounds": a.rounds,
        "params": spec["params_count"],
        "gmacs_per_patch_forward": spec["gmacs_per_patch"],
        "jax_conv_impl": runs.get("jax", {}).get("impl"),
        "jax_devices": runs.get("jax", {}).get("devices"),
        "jax_batch_sharded_over": runs.get("jax", {}).get("batch_sharded_over"),
        "compilation_cache": a.compilation_cache,
        "runs": runs,
        "round_runs": rounds,
    }
    result.update(_summarise(rounds, b, a.what))
    _print_table(result, a)
    if a.json:
        from nodulejax.runtime.files import atomic_write_json

        atomic_write_json(a.json, result, indent=1)
        print(f"wrote {a.json}")
    return 0


def _print_table(r, a):
    print(
        f"\nFPR DenseUNet3D {r['size']}^3, batch {r['batch']}, {r['steps']}-step L-inf PGD, "
        f"{r['dtype']}, {r['params'] / 1e3:.1f}k params, {r['gmacs_per_patch_forward']:.2f} "
        f"GMACs/patch fwd; {r['device']}{' / ' + r['accelerator'] if r['accelerator'] else ''}"
    )
    print(f"{'framework':<15}{'PGD patches/s':>15}{'train steps/s':>15}{'peak MB':>10}")
    base = r.get("torch_eager_patches_per_s")
    for fw in ("jax", "torch_eager", "torch_compile"):
        if fw not in r["runs"]:
            continue
        p, t, m = (r[f"{fw}_patches_per_s"], r[f"{fw}_train_steps_per_s"], r[f"{fw}_peak_mb"])
        f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
        extra = f"  ({p / base:.2f}x eager)" if p and base else ""
        err = r.get(f"{fw}_error")
        print(
            f"{fw:<15}{f(p):>15}{f(t):>15}{f(m, 0):>10}{extra}" + (f"  {err[:120]}" if err else "")
        )
    for name, q in r.get("ratios", {}).items():
        per = ", ".join("-" if v is None else f"{v:.2f}" for v in q["per_round"])
        print(f"  {name}: median {q['median']:.2f}x  (rounds: {per})")


if __name__ == "__main__":
    sys.exit(main())
