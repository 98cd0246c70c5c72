"""Test session set-up: two host CPU devices, as ``config.runtime.cpu_devices="auto"`` gives
on the 2-core CI machine, so the batch-sharded paths (PGD's ``shard="auto"``, the training
loop's data parallelism) run in the tests as they do in the study."""

from nodulejax.runtime import devices

devices.configure_cpu_devices(2)
