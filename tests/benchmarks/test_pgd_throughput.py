"""The benchmark's bookkeeping (benchmarks/pgd_throughput.py): a worker's peak memory is its
own (not the spawning process's, which Linux carries over exec into ru_maxrss), and the
per-round JAX / PyTorch ratios and medians."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import pgd_throughput as bench  # noqa: E402


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc only")
def test_worker_peak_is_its_own_not_the_parents():
    big = np.ones(300 * 2**20 // 8)  # ~300 MB resident in this (parent) process
    big += 1.0
    code = ("import sys, resource; sys.path.insert(0, sys.argv[1]); import pgd_throughput as b;"
            "print(b._peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "benchmarks")],
                         capture_output=True, text=True, check=True).stdout.split()
    own, inherited = float(out[0]), float(out[1])
    assert inherited > 300  # the kernel's ru_maxrss includes the parent's ~300 MB
    assert own < 200  # numpy + the benchmark module, nothing of the parent's array
    assert big[0] == 2.0


def test_reset_keeps_the_earlier_peak_and_measures_a_later_one():
    if not bench._reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs")
    before = bench._peak_rss_mb()
    a = np.ones(100 * 2**20 // 8)
    a += 1.0
    del a
    steady = bench._status_mb("VmHWM")
    assert steady >= bench._status_mb("VmRSS")
    assert bench._peak_rss_mb() >= before


def test_summary_takes_each_rounds_ratio_and_the_median():
    def run(pgd_s, train_s, mb):
        return {"pgd": {"median_s": pgd_s}, "train": {"median_s": train_s}, "peak_rss_mb": mb}

    rounds = [{"jax": run(1.0, 0.5, 1000), "torch_eager": run(2.0, 0.5, 500)},
              {"jax": run(3.0, 1.0, 1200), "torch_eager": run(3.0, 2.0, 600)},
              {"jax": run(1.0, 1.0, 900), "torch_eager": {"error": "worker rc 1"}}]
    out = bench._summarise(rounds, batch=8, what=["pgd", "train"])
    pgd = out["ratios"]["jax_over_torch_eager_pgd"]
    assert pgd["per_round"] == [2.0, 1.0, None]
    assert pgd["median"] == 1.5
    assert out["ratios"]["jax_over_torch_eager_train"]["per_round"][:2] == [1.0, 2.0]
    assert out["ratios"]["jax_over_torch_eager_peak_mb"]["per_round"][:2] == [2.0, 2.0]
    assert out["jax_patches_per_s"] == 8.0  # median of 8, 8/3, 8 patches/s
    assert out["torch_eager_peak_rss_mb"] == 550
    assert "torch_compile_patches_per_s" not in out
