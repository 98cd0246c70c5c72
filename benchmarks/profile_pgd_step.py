"""Where one JAX PGD step spends its time on the CPU (benchmarks/RESULTS.md sec. 6).

Times ``grad_x`` (one PGD step: forward + input gradient of the summed FPR loss,
``common.fpr_attack_loss``) and one train step of the config's FPR network (the project's,
``common.fpr_train_step``), on one device and with the batch split over the
host's CPU devices, then takes a ``jax.profiler`` trace of the one-device step and prints
the busy time of each XLA thread and the ops by kind.

    python benchmarks/profile_pgd_step.py --config demo --batch 16 [--cpu-devices 2]
"""

from __future__ import annotations

import argparse
import collections
import glob
import sys
import tempfile
import time

import common

ROOT = common.ROOT


def _ms(fn, *args, n=10):
    import jax
    import numpy as np

    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("demo", "paper"), default="demo")
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cpu-devices", default="auto")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from nodulejax.runtime import devices

    devices.configure_cpu_devices(a.cpu_devices)
    import jax
    import jax.numpy as jnp
    import optax
    from jax.profiler import ProfileData

    from nodulejax.models import denseunet

    cfg = common.load_config(a.config)
    size = a.size or int(cfg.fpr.patch_size)
    model = denseunet.from_config(cfg.fpr)
    x = jax.random.uniform(jax.random.PRNGKey(1), (a.batch, size, size, size, 1))
    v = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1, :8, :8, :8])
    y = jnp.ones((a.batch,))
    opt = optax.adam(1e-3)
    attack_loss = common.fpr_attack_loss(model)

    def loss(x, v, y):
        return jnp.sum(attack_loss(x, v, y))

    grad_x, step = jax.jit(jax.grad(loss)), jax.jit(common.fpr_train_step(model, opt))
    state, batch = common.fpr_train_state(v, opt), common.fpr_batch(x, y)
    print(f"{jax.local_device_count()} CPU devices; {a.config} FPR {size}^3, batch {a.batch}")
    print(f"one device:   grad_x {_ms(grad_x, x, v, y):7.1f} ms   "
          f"train {_ms(step, state, batch):7.1f} ms")
    mesh = devices.mesh_for(a.batch)
    if mesh is not None:
        xs, ys = devices.put_batch((x, y), mesh)
        vr, sr = devices.replicate((v, state), mesh)
        bs = devices.put_batch(batch, mesh)
        print(f"batch split over {mesh.size}: grad_x {_ms(grad_x, xs, vr, ys):7.1f} ms   "
              f"train {_ms(step, sr, bs):7.1f} ms")

    calls = 5
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(calls):
            jax.block_until_ready(grad_x(x, v, y))
        jax.profiler.stop_trace()
        prof = ProfileData.from_file(glob.glob(d + "/**/*.xplane.pb", recursive=True)[0])
        by_kind, count = collections.Counter(), collections.Counter()
        print("\nper XLA thread, one-device grad_x (ms per call): busy in ops")
        for plane in prof.planes:
            for line in plane.lines:
                if "XLA" not in line.name:
                    continue
                ops = [e for e in line.events if not e.name.startswith("ThunkExecutor")]
                busy = sum(e.duration_ns for e in ops) / 1e6 / calls
                if ops:
                    print(f"  {line.name[:40]:<40} {busy:7.1f}")
                for e in ops:
                    kind = e.name.rstrip("0123456789.")
                    by_kind[kind] += e.duration_ns
                    count[kind] += 1
    print("\nops by kind (ms per call, instances per call)")
    for kind, ns in by_kind.most_common(15):
        print(f"  {ns / 1e6 / calls:7.2f}  {count[kind] / calls:6.1f}  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
