"""Test session set-up: two host CPU devices, as ``config.runtime.cpu_devices="auto"`` gives
on the 2-core CI machine, so the batch-sharded paths (PGD's ``shard="auto"``, the training
loop's data parallelism) run in the tests as they do in the study."""

import os

import pytest

from nodulejax.runtime import compilation, devices

devices.configure_cpu_devices(2)
# the entry points' "auto" compilation cache is ~/.cache/nodulejax/xla: tests (and the train.py
# / attack.py they start) write nothing outside their temporary folders
os.environ[compilation.ENV] = "off"

# Whole-study modules first: each builds a tiny study in a module fixture (minutes). Under
# ``--dist loadfile`` (pyproject addopts) a module runs on one xdist worker, so its fixture is
# built once, and starting the two longest modules first keeps them off the end of the run.
# ``--no-loadscope-reorder`` (pyproject addopts) keeps this order: by default xdist queues
# modules by their number of tests, which put these two (few tests, minutes each) last.
_FIRST = ("tests/study/test_faults.py", "tests/study/test_runner.py")


def pytest_collection_modifyitems(config, items):
    rank = {f: i for i, f in enumerate(_FIRST)}
    items.sort(key=lambda it: rank.get(it.nodeid.split("::")[0], len(_FIRST)))


@pytest.fixture(scope="session")
def pool_setup(tmp_path_factory):
    """(config, workdir, generator, scans) of ``tests/adversarial/pool/helpers.py``, shared by
    the pool and stress tests; session scope: built once per process (one per xdist worker
    that runs either module, as ``--dist loadfile`` keeps each module on one worker). Imported
    here, not above, so nothing of the project is imported before the devices are set."""
    from tests.adversarial.pool.helpers import build_pool_setup

    return build_pool_setup(tmp_path_factory)
