"""nodulejax.evaluation.plots: the FROC curve PNG."""

import os

from nodulejax.evaluation.plots import plot_froc


def test_froc_png_is_written(tmp_path):
    fps = ("0.125", "0.25", "0.5", "1", "2", "4", "8")
    res = {"sensitivity_at": dict(zip(fps, (0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8), strict=True)),
           "cpm": 0.457, "cpm_ci": [0.3, 0.6],
           "curve": {"fps": [0.1, 1.0, 8.0], "sensitivity": [0.1, 0.5, 0.8]}}
    path = str(tmp_path / "froc.png")
    plot_froc(res, path, name="x")
    assert os.path.getsize(path) > 1000
