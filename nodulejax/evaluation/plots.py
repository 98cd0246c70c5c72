"""FROC curve figure (the LUNA16 style: log2 FP axis from 1/8 to 8, bootstrap band shaded)."""

from __future__ import annotations

import os

import numpy as np


def plot_froc(result: dict, path: str | os.PathLike, name: str = "run") -> None:
    """Write the FROC curve of an :func:`nodulejax.evaluation.froc.evaluate` result to ``path``
    (PNG, matplotlib Agg). x: average FPs per scan, log2 axis 1/8..8; y: sensitivity; the
    bootstrap 95% interval (``result["band"]``) is shaded when present."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ticks = [float(k) for k in result["sensitivity_at"]]
    xmin, xmax = min(ticks), max(ticks)
    fps = np.asarray(result["curve"]["fps"], np.float64)
    sens = np.asarray(result["curve"]["sensitivity"], np.float64)
    grid = np.geomspace(xmin, xmax, 400)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    ci = result.get("cpm_ci")
    label = f"{name} (CPM {result['cpm']:.3f}" + (f", {ci[0]:.3f}-{ci[1]:.3f})" if ci else ")")
    ax.plot(grid, np.interp(grid, fps, sens), color="C0", lw=2, label=label)
    band = result.get("band")
    if band:
        ax.fill_between(
            band["fps"], band["lo"], band["hi"], color="C0", alpha=0.2, label="95% bootstrap CI"
        )
    ax.plot(ticks, list(result["sensitivity_at"].values()), "o", color="C0", ms=4)
    ax.set_xscale("log", base=2)
    ax.set_xlim(xmin, xmax)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("Average number of false positives per scan")
    ax.set_ylabel("Sensitivity")
    ax.grid(True, which="both", alpha=0.4)
    ax.legend(loc="lower right")
    ax.set_title("FROC")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
