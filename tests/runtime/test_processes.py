"""nodulejax.runtime.processes: spawn_map returns the results in order, as one process would."""

from nodulejax.runtime.processes import spawn_map


def test_spawn_map_is_map_in_order():
    assert spawn_map(abs, [-3, 1, -2], 2) == [3, 1, 2]
    assert spawn_map(abs, [-1], 1) == [1]
