"""nodulejax.runtime.memory: freed heap pages go back to the OS."""

import numpy as np
import pytest

from nodulejax.runtime import memory


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(memory._malloc_trim() is None, reason="C library without malloc_trim")
def test_release_freed_returns_fragmented_heap_pages():
    # 16 KiB arrays come from malloc's arenas (below the mmap threshold); keeping every 64th
    # pins the heap's top, so plain free() cannot shrink it: the compiler's pattern
    blocks = [np.ones(2048) for _ in range(20_000)]  # 20k x 16 KiB = ~330 MB
    keep = blocks[::64]
    del blocks
    before = _rss_mb()
    assert memory.release_freed()
    after = _rss_mb()
    assert before - after > 150, (before, after)
    assert all(float(k[0]) == 1.0 for k in keep)  # live allocations untouched
