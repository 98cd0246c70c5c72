"""Where one JAX training step spends its time on the CPU, per op kind (benchmarks/RESULTS.md).

``--model fpr``: one FPR training step of the config's DenseUNet3D, the project's
(``nodulejax.train.fpr.make_fpr_step`` through ``common.fpr_train_step``: forward, backward
over the parameters, Adam lr 1e-3).
``--model synth``: one synthesizer step (``nodulejax.train.synth.make_synth_step``: VAE +
spectrally-normalised critic with gradient penalty, paper Section 3.2, Eqs. 5-6).

Times the jitted step (state donated, as ``train.loop.fit`` does) with the batch split over
the host's CPU devices (``--shard auto``) or on one device (``--shard none``), then takes a
``jax.profiler`` trace and adds up the XLA ops' durations by kind. Convolutions (and the
1x1x1 ``dot`` convolutions) are split by role from the compiled HLO: ``forward``,
``input-grad`` (backward, kernel-sized window) and ``kernel-grad`` (backward, a window as
large as the image: the gradient over the parameters). Times are summed over the XLA
threads (both devices' threads on two devices), so they add up to more than the wall time.

    python benchmarks/profile_train_step.py --config demo --size 32 --batch 8
    python benchmarks/profile_train_step.py --config paper --size 64 --batch 2
    python benchmarks/profile_train_step.py --model synth --config demo
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import sys
import tempfile
import time

import common

ROOT = common.ROOT
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w+)\(")


def _ms(fn, n):
    import numpy as np

    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def _conv_role(line: str) -> str:
    """'forward' / 'input-grad' / 'kernel-grad' of one HLO convolution or dot line."""
    m = re.search(r"window=\{size=([\dx]+)", line)
    if m and max(int(v) for v in m.group(1).split("x")) > 7:
        return "kernel-grad"
    if "transpose(" not in line:
        return "forward"
    if " dot(" in line:  # backward 1x1x1 conv: kernel grad gives a 2D (Cin, Cout) result
        shape = re.search(r"= \w+\[([\d,]*)\]", line)
        dims = shape.group(1).split(",") if shape else []
        return "kernel-grad" if len(dims) == 2 else "input-grad"
    return "input-grad"


def hlo_kinds(hlo_text: str) -> dict:
    """HLO instruction name -> kind ("conv forward", "dot kernel-grad", "fusion", ...), and
    name -> its HLO line."""
    comps, cur = {}, None
    for line in hlo_text.splitlines():
        if line.rstrip().endswith("{") and "=" not in line.split("(")[0]:
            cur = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            comps[cur] = []
        elif cur is not None and _INSTR.match(line):
            comps[cur].append(line)
    kinds, lines_of = {}, {}
    for lines in comps.values():
        for line in lines:
            name, _, op = _INSTR.match(line).groups()
            lines_of[name] = line.strip()
            if op in ("convolution", "dot"):
                kinds[name] = f"{'conv' if op == 'convolution' else 'dot'} {_conv_role(line)}"
            elif op == "fusion":
                called = re.search(r"calls=%?([\w.\-]+)", line)
                inner = comps.get(called.group(1), []) if called else []
                hit = [ln for ln in inner if re.search(r" (convolution|dot)\(", ln)]
                if hit:
                    op2 = "conv" if " convolution(" in hit[0] else "dot"
                    kinds[name] = f"{op2} {_conv_role(hit[0])} (fused)"
                else:
                    kinds[name] = "fusion " + name.split(".")[0].replace("_fusion", "")
            else:
                kinds[name] = op
    return kinds, lines_of


def profile(fn, hlo_text: str, calls: int):
    """Run ``fn`` ``calls`` times under the profiler -> ({kind: ms/call}, {kind: n/call},
    {HLO op name: ms/call})."""
    import jax
    from jax.profiler import ProfileData

    kinds, _ = hlo_kinds(hlo_text)
    by_kind, count, by_op = collections.Counter(), collections.Counter(), collections.Counter()
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(calls):
            fn()
        jax.profiler.stop_trace()
        prof = ProfileData.from_file(glob.glob(d + "/**/*.xplane.pb", recursive=True)[0])
        for plane in prof.planes:
            for line in plane.lines:
                if "XLA" not in line.name:
                    continue
                for e in line.events:
                    if e.name.startswith(("ThunkExecutor", "ThreadpoolListener", "end: ")):
                        continue
                    kind = kinds.get(e.name, e.name.rstrip("0123456789.") + " (?)")
                    by_kind[kind] += e.duration_ns / 1e6 / calls
                    count[kind] += 1 / calls
                    by_op[e.name] += e.duration_ns / 1e6 / calls
    return by_kind, count, by_op


def _fpr_step(cfg, a):
    import jax
    import jax.numpy as jnp
    import optax

    from nodulejax.models import denseunet

    size = a.size or int(cfg.fpr.patch_size)
    model = denseunet.from_config(cfg.fpr, conv_impl=a.impl)
    x = jax.random.uniform(jax.random.PRNGKey(1), (a.batch, size, size, size, 1))
    small = 2 ** (len(model.block_layers) - 1)
    v = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1, :small, :small, :small])
    y = (jnp.arange(a.batch) % 2).astype(jnp.float32)
    opt = optax.adam(1e-3)
    return (common.fpr_train_step(model, opt), common.fpr_train_state(v, opt),
            common.fpr_batch(x, y), f"FPR {size}^3")


def _synth_step(cfg, a):
    import jax
    import numpy as np
    import optax

    from nodulejax.train.synth import init_synth_state, make_synth_step

    if a.size:
        cfg.synth.patch_size = a.size
    p = int(cfg.synth.patch_size)
    b = a.batch or int(cfg.synth.batch_size)
    tx_v = optax.adam(float(cfg.synth.lr), b1=0.5, b2=0.9)
    tx_c = optax.adam(float(cfg.synth.lr), b1=0.5, b2=0.9)
    state = init_synth_state(cfg, jax.random.key(1, impl="rbg"), tx_v, tx_c)
    train_step = make_synth_step(cfg, tx_v, tx_c)
    key = jax.random.key(0)

    def step(state, batch):
        new, m = train_step(state, batch, key)
        return new, m["loss"]

    x = np.random.default_rng(0).uniform(size=(b, p, p, p)).astype(np.float32)
    return step, state, {"x": x}, f"synth {p}^3 (n_critic {int(cfg.synth.n_critic)})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("fpr", "synth"), default="fpr")
    ap.add_argument("--config", choices=("demo", "paper"), default="demo")
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--batch", type=int, default=0, help="default: 8 (fpr), config's (synth)")
    ap.add_argument("--impl", default="auto")
    ap.add_argument("--cpu-devices", default="auto")
    ap.add_argument("--shard", choices=("auto", "none"), default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3, help="profiled calls")
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--top-ops", type=int, default=0, help="also list the N slowest HLO ops")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from nodulejax.runtime import devices

    devices.configure_cpu_devices(a.cpu_devices)
    import jax

    cfg = common.load_config(a.config)
    if a.model == "fpr":
        a.batch = a.batch or 8
        step, state, batch, what = _fpr_step(cfg, a)
    else:
        step, state, batch, what = _synth_step(cfg, a)
    n = jax.tree.leaves(batch)[0].shape[0]
    mesh = devices.mesh_for(n) if a.shard == "auto" else None
    if mesh is not None:
        state, batch = devices.replicate(state, mesh), devices.put_batch(batch, mesh)
    else:
        state, batch = jax.device_put((state, batch))
    jstep = jax.jit(step, donate_argnums=(0,))
    hlo = jstep.lower(state, batch).compile().as_text()
    box = {"s": state}

    def run():
        box["s"], loss = jstep(box["s"], batch)
        loss.block_until_ready()

    t = _ms(run, a.repeats)
    print(f"{what}, batch {n}, {mesh.size if mesh else 1} device(s), impl {a.impl}: "
          f"{t:.1f} ms per step (median of {a.repeats})")
    by_kind, count, by_op = profile(run, hlo, a.calls)
    total = sum(by_kind.values())
    print(f"ops by kind, ms per step summed over XLA threads (total {total:.1f}), "
          f"instances per step")
    for kind, ms in by_kind.most_common(a.top):
        print(f"  {ms:8.1f}  {100 * ms / total:5.1f}%  {count[kind]:6.1f}  {kind}")
    lines_of = hlo_kinds(hlo)[1]
    for op, ms in by_op.most_common(a.top_ops):
        print(f"  {ms:8.1f}  {lines_of.get(op, op)[:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
