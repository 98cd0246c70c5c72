"""Model complexity beside the paper's Table 2: parameters and multiply-accumulates (MACs).

    python -m nodulejax.models.summary --config configs/paper.py [--json] [--xla]

Rows (Table 2): the blob ResUNet at c.cg.input_size^3, the RPN (backbone + head, see
nodulejax.models.rpn) at the same size, and the FPR DenseUNet3D at c.fpr.patch_size^3.

Counting (nothing is executed; shapes come from `jax.eval_shape`):
* params: every leaf of the parameter tree. For the FPR the trees of task="cls" and
  task="seg" are merged, so the segmentation decoder it is pre-trained with counts too.
* MACs: exact per-layer count of the convolutions and dense layers, intercepted on every
  `Conv3D` / `nn.Conv` / `nn.Dense` call: prod(output shape without channels) * k^3 * Cin *
  Cout (Dense: prod(batch dims) * Cin * Cout), batch 1. Normalisation, activations, additions
  and resizes are not counted (the usual convention; they are < 1% of the convs here).
* `--xla` adds XLA's own count, cost_analysis()['flops'] / 2 of the jitted forward lowered
  with the plain "xla3d" convolution (other lowerings reshape the conv into 2D pieces but
  count the same multiply-adds); it compiles each model, which takes a while at 128^3 on CPU.
"""

from __future__ import annotations

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from nodulejax.models.denseunet import from_config
from nodulejax.models.layers import Conv3D
from nodulejax.models.resunet import build_resunet
from nodulejax.models.rpn import build_rpn
from nodulejax.runtime.cli import run_main
from nodulejax.runtime.config_tools import flatten

# Table 2 of the paper: (params, GMACs, input side)
PAPER_TABLE2 = {
    "resunet": {"params": 143_920, "gmacs": 67.15, "input": 128},
    "rpn": {"params": 276_930, "gmacs": 113.91, "input": 128},
    "fpr": {"params": 455_980, "gmacs": 17.24, "input": 64},
}
NAMES = {"resunet": "Blob Solid / GGO ResUNet", "rpn": "RPN", "fpr": "FPR"}


def count_params(variables) -> int:
    """Number of scalars in the 'params' collection of a variables tree."""
    tree = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)))


def count_macs(fn, *args) -> int:
    """Exact MACs of conv/dense layers executed by `fn(*args)` (traced with jax.eval_shape)."""
    total = [0]
    depth = [0]

    def interceptor(next_fun, call_args, kwargs, context):
        m = context.module
        counted = context.method_name == "__call__" and isinstance(m, Conv3D | nn.Conv | nn.Dense)
        if not counted or depth[0] > 0:
            return next_fun(*call_args, **kwargs)
        depth[0] += 1
        try:
            out = next_fun(*call_args, **kwargs)
        finally:
            depth[0] -= 1
        cin = call_args[0].shape[-1]
        positions = int(np.prod(out.shape[:-1]))
        if isinstance(m, Conv3D):
            taps = int(m.kernel_size) ** 3
        elif isinstance(m, nn.Conv):
            ks = m.kernel_size
            taps = int(np.prod(ks)) if isinstance(ks, tuple | list) else int(ks)
            if isinstance(m.feature_group_count, int):
                cin = cin // m.feature_group_count
        else:
            taps = 1
        total[0] += positions * taps * cin * out.shape[-1]
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(fn, *args)
    return total[0]


def xla_macs(fn, *args) -> float:
    """XLA's count: cost_analysis()['flops'] / 2 of jit(fn) lowered and compiled (not run)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost["flops"]) / 2


def _measure(model, shape, xla: bool, **apply_kw):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    key = jax.random.key(0)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, **apply_kw), key, x)
    fwd = lambda v, x: model.apply(v, x, **apply_kw)  # noqa: E731
    row = {"params": count_params(variables), "gmacs": count_macs(fwd, variables, x) / 1e9}
    if xla:
        zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), t)  # noqa: E731
        row["xla_gmacs"] = xla_macs(fwd, zeros(variables), jnp.zeros(shape, jnp.float32)) / 1e9
    return row, variables


def summarize(config, xla: bool = False, rows=("resunet", "rpn", "fpr")) -> dict:
    """{'resunet'|'rpn'|'fpr': {'params', 'gmacs'[, 'xla_gmacs']}} for a full config."""
    impl = "xla3d" if xla else "auto"
    out = {}
    s = int(config.cg.input_size)
    if "resunet" in rows:
        out["resunet"], _ = _measure(build_resunet(config.cg, impl), (1, s, s, s, 1), xla)
    if "rpn" in rows:
        out["rpn"], _ = _measure(build_rpn(config.cg, impl), (1, s, s, s, 1), xla)
    if "fpr" in rows:
        out["fpr"] = _fpr_row(config, impl, xla)
    return out


def build_fpr(fpr, conv_impl: str = "auto"):
    """DenseUNet3D from config block c.fpr (``nodulejax.models.denseunet.from_config``)."""
    return from_config(fpr, conv_impl=conv_impl)


def _fpr_row(config, impl, xla):
    p = int(config.fpr.patch_size)
    model = build_fpr(config.fpr, impl)
    row, cls_vars = _measure(model, (1, p, p, p, 1), xla, task="cls")
    seg_vars = jax.eval_shape(lambda k, x: model.init(k, x, task="seg"), jax.random.key(0),
                              jax.ShapeDtypeStruct((1, p, p, p, 1), jnp.float32))
    merged = {**flatten(seg_vars.get("params", {})), **flatten(cls_vars.get("params", {}))}
    row["params"] = int(sum(int(np.prod(v.shape)) for v in merged.values()))
    return row


def format_table(ours: dict) -> str:
    """Markdown table: Table 2 of the paper beside our numbers."""
    lines = ["| Network | Input | #Param (paper) | #Param (ours) | MACs G (paper) "
             "| MACs G (ours) |", "|---|---|---|---|---|---|"]
    for key, row in ours.items():
        paper = PAPER_TABLE2[key]
        extra = f" (XLA {row['xla_gmacs']:.2f})" if "xla_gmacs" in row else ""
        lines.append(f"| {NAMES[key]} | {paper['input']}^3 | {paper['params'] / 1e3:.2f}k | "
                     f"{row['params'] / 1e3:.2f}k ({row['params'] / paper['params'] - 1:+.1%}) | "
                     f"{paper['gmacs']:.2f} | {row['gmacs']:.2f} "
                     f"({row['gmacs'] / paper['gmacs'] - 1:+.1%}){extra} |")
    return "\n".join(lines)


def _define(fv):
    flags.DEFINE_boolean("json", False, "print a JSON object instead of the table",
                         flag_values=fv)
    flags.DEFINE_boolean("xla", False, "also XLA's cost analysis (slow)", flag_values=fv)


def _main(fv) -> int:
    config = fv["config"].value
    ours = summarize(config, xla=fv["xla"].value)
    if fv["json"].value:
        print(json.dumps(ours))
    else:
        inputs = (f"ResUNet/RPN at {config.cg.input_size}^3, "
                  f"FPR at {config.fpr.patch_size}^3 (config {fv['config'].serialize()})")
        print(f"Table 2 (paper) beside ours; {inputs}\n{format_table(ours)}")
    return 0


def main(argv=None) -> int:
    """``python -m nodulejax.models.summary --config configs/paper.py``: exit code."""
    return run_main("python -m nodulejax.models.summary", _define, _main, argv,
                    doc=__doc__, config="required")


if __name__ == "__main__":
    sys.exit(main())
