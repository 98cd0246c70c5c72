"""What the benchmarks share: the config they run and the FPR steps they time.

* :func:`load_config`: ``--config demo`` (``configs/demo.py``), ``paper``
  (``configs/default.py``, the paper's sizes) or a config file (``path.py[:arg]``), loaded by
  the project's loader (``nodulejax.runtime.config_tools.load_config``).
* :func:`fpr_train_step` / :func:`fpr_train_state` / :func:`fpr_batch`: the project's FPR
  train step (``nodulejax.train.fpr.make_fpr_step``: forward, mean FPR loss, backward over
  the parameters, optimiser update; KL weight 1) as ``step(state, batch) -> (state, loss)``,
  for the benchmarks that measure that step (profiles, memory).
* :func:`run_record` / :func:`write_result`: the provenance every results JSON starts with
  (benchmark, date, commit, machine, versions, arguments) and its file
  ``<out>/<name>_<date>[_<tag>].json``.
* :func:`status_mb` / :func:`reset_peak_rss` / :func:`peak_rss_mb`: this process's resident
  memory and its high-water mark (``VmHWM``), restartable per phase (``clear_refs`` 5).
* :func:`fpr_attack_loss`: the per-example FPR loss ``loss(x, variables, y) -> (B,)`` that
  PGD maximises (``nodulejax.losses.fpr.fpr_loss`` of ``model.apply``), in float32 or
  bfloat16.
* :func:`loss_train_step`: one Adam-style step on the mean of such a loss,
  ``step(variables, opt_state, x, y) -> (variables, opt_state, loss)``, in the loss's dtype:
  the step ``pgd_throughput.py`` compares with its PyTorch twin (``torch_denseunet.py``), which
  runs the same algorithm in float32 or bfloat16 (the project's step computes in float32).

Nothing is imported at module level but the standard library: the PyTorch workers of
``pgd_throughput.py`` import this module without loading JAX.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: ``--config`` names -> files under configs/
CONFIGS = {"demo": "demo.py", "paper": "default.py"}


def config_path(name: str) -> str:
    """The config file of a ``--config`` value: a name of :data:`CONFIGS` or a path as given."""
    return os.path.join(ROOT, "configs", CONFIGS[name]) if name in CONFIGS else name


def load_config(name: str):
    """The config of ``--config name`` (:func:`config_path`), by the project's loader."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from nodulejax.runtime.config_tools import load_config as load

    return load(config_path(name))


def run_record(benchmark: str, args, root: str = ROOT, **extra) -> dict:
    """The provenance a results JSON starts with: benchmark, date, commit of ``root``,
    machine, cores, Python and the versions of numpy (and JAX, its device, when JAX is
    loaded), the arguments, then ``extra``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    doc = {"benchmark": benchmark, "date": datetime.date.today().isoformat(),
           "commit": commit, "machine": platform.platform(), "cpus": os.cpu_count(),
           "python": platform.python_version()}
    for mod in ("numpy", "jax"):
        if mod in sys.modules:
            doc[mod] = sys.modules[mod].__version__
    if "jax" in sys.modules:
        doc["device"] = str(sys.modules["jax"].devices()[0])
    doc["args"] = vars(args) if not isinstance(args, dict) else args
    doc.update(extra)
    return doc


def write_result(out_dir: str, doc: dict, tag: str = "") -> str:
    """Write ``doc`` (:func:`run_record`) to ``out_dir/<benchmark>_<date>[_<tag>].json``;
    returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    name = f"{doc['benchmark']}_{doc['date']}" + (f"_{tag}" if tag else "")
    path = os.path.join(out_dir, name + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    return path


def status_mb(field: str) -> float | None:
    """``VmHWM`` (RSS high-water mark) or ``VmRSS`` of this process, MB (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


_PEAK = {"mb": 0.0}  # the high-water mark before the last reset


def reset_peak_rss() -> bool:
    """Restart this process's RSS high-water mark (``clear_refs`` 5), keeping the old one."""
    _PEAK["mb"] = max(_PEAK["mb"], status_mb("VmHWM") or 0.0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's own peak RSS, MB: ``VmHWM`` (reset by ``exec``) and its earlier peaks.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the spawning process's peak RSS
    over ``exec`` into it, so a worker would report at least the parent's peak.
    """
    hwm = status_mb("VmHWM")
    if hwm is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return max(hwm, _PEAK["mb"])


def fpr_train_step(model, tx):
    """``step(state, batch) -> (state, loss)``: ``nodulejax.train.fpr.make_fpr_step`` of
    ``model`` (its head) and optimiser ``tx``, KL weight 1 (no annealing), no in-step
    augmentation. ``state``: :func:`fpr_train_state`; ``batch``: :func:`fpr_batch`."""
    import jax

    from nodulejax.train.fpr import make_fpr_step

    inner = make_fpr_step(model, tx, head=model.head, kl_anneal_steps=0)
    key = jax.random.key(0)  # only the in-step augmentation draws from it

    def step(state, batch):
        new, metrics = inner(state, batch, key)
        return new, metrics["loss"]

    return step


def fpr_train_state(variables, tx) -> dict:
    """The train state of :func:`fpr_train_step`: ``{"params", "opt_state", "step"}``."""
    import jax.numpy as jnp

    params = variables["params"]
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def fpr_batch(x, y) -> dict:
    """A batch of :func:`fpr_train_step` from patches ``x`` (B, P, P, P, 1) and labels (B,)."""
    return {"x": x[..., 0], "y": y}


def fpr_attack_loss(model, dtype=None):
    """``loss(x, variables, y) -> (B,)``: ``fpr_loss(model.apply(variables, x), y)`` with the
    network run in ``dtype`` (the input cast to it; None: as given) and the loss in float32."""
    import jax.numpy as jnp

    from nodulejax.losses.fpr import fpr_loss

    head = model.head

    def loss(x, variables, y):
        out = model.apply(variables, x if dtype is None else x.astype(dtype))
        return fpr_loss(out.astype(jnp.float32), y, head=head)

    return loss


def loss_train_step(loss, tx):
    """``step(variables, opt_state, x, y) -> (variables, opt_state, mean loss)``: the gradient
    of ``mean(loss(x, variables, y))`` over ``variables``, then ``tx``'s update."""
    import jax
    import jax.numpy as jnp
    import optax

    def step(v, s, x, y):
        val, g = jax.value_and_grad(lambda v: jnp.mean(loss(x, v, y)))(v)
        upd, s = tx.update(g, s, v)
        return optax.apply_updates(v, upd), s, val

    return step
