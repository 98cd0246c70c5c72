"""Host-side worker processes for the numpy/scipy data stages (phantom generation, scan
preparation): one small helper so both use the same start method and ordering."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def spawn_map(fn, jobs: list, workers: int, desc: str | None = None) -> list:
    """``[fn(j) for j in jobs]``, in order, in up to ``workers`` ``spawn`` processes.

    ``spawn`` (not fork) so no JAX/XLA state of the parent is copied into a child; ``fn``
    must be a module-level function and the caller's script must be import-safe (the usual
    ``if __name__ == "__main__"`` guard). One worker or one job runs in this process.
    ``desc``: a tqdm bar over the jobs with that name (None: no bar).
    """
    from tqdm.auto import tqdm

    jobs = list(jobs)
    bar = dict(total=len(jobs), desc=desc, disable=desc is None, dynamic_ncols=True)
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(min(workers, len(jobs)),
                             mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(tqdm(ex.map(fn, jobs), **bar))
