"""nodulejax.runtime.batching: fixed-shape batches, padded with the last row and cut."""

import numpy as np

from nodulejax.runtime.batching import map_batches, pad_rows


def test_every_call_sees_the_fixed_batch_and_rows_come_back_in_order():
    shapes = []

    def fn(a, b):
        shapes.append(a.shape)
        return {"s": a.sum(axis=1) + b, "a": a}

    a = np.arange(14 * 3, dtype=np.float32).reshape(14, 3)
    b = np.arange(14, dtype=np.float32)
    out = map_batches(fn, (a, b), 4)
    assert shapes == [(4, 3)] * 4  # 14 rows -> 4 batches of 4 (the last padded)
    np.testing.assert_array_equal(out["s"], a.sum(1) + b)
    np.testing.assert_array_equal(out["a"], a)
    assert map_batches(fn, (a[:0], b[:0]), 4) == {}


def test_pad_rows_repeats_the_last_row():
    (x,), n = pad_rows((np.array([[1, 2], [3, 4]]),), 4)
    assert n == 2 and x.tolist() == [[1, 2], [3, 4], [3, 4], [3, 4]]
