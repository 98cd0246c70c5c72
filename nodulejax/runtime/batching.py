"""Fixed-shape batching on the host: one jitted function, one compile, any number of rows.

A jitted function recompiles for every new batch shape. :func:`map_batches` feeds it batches of
exactly ``batch`` rows: a short last batch is padded with copies of its last row and the padded
rows are cut from the result, so every row's output is what the full batch computes for it
(the PGD engine and the FPR are per-example) and reruns are bitwise identical.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["map_batches", "pad_rows"]


def pad_rows(arrays, batch: int) -> tuple[list[np.ndarray], int]:
    """``arrays`` (each (m, ...), m <= batch) padded to ``batch`` rows with copies of the last
    row; returns (padded arrays, m)."""
    part = [np.asarray(a) for a in arrays]
    m = len(part[0])
    if 0 < m < batch:
        part = [np.concatenate([a, np.repeat(a[-1:], batch - m, 0)]) for a in part]
    return part, m


def map_batches(fn: Callable[..., dict], arrays: tuple, batch: int) -> dict:
    """Apply ``fn(*batch_arrays) -> {name: (b, ...)}`` over fixed-size batches of ``arrays``
    (each (n, ...)); returns ``{name: (n, ...)}`` numpy arrays (empty dict when n == 0)."""
    n = len(arrays[0])
    out: dict[str, list] = {}
    for i in range(0, n, batch):
        part, m = pad_rows([a[i:i + batch] for a in arrays], batch)
        for k, v in fn(*part).items():
            out.setdefault(k, []).append(np.asarray(v)[:m])
    return {k: np.concatenate(v) for k, v in out.items()}
