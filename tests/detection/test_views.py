"""nodulejax.detection.views: radiological orientation whatever the direction matrix, and the
pictures / report of a few synthetic findings (no network)."""

from __future__ import annotations

import numpy as np

from nodulejax.data import io
from nodulejax.data.prepare import prepare_volume
from nodulejax.detection import views
from nodulejax.detection.scan import Findings


def test_flipped_axes_are_turned_to_lps():
    assert views._flips(np.eye(3)) == (False, False, False)
    assert views._flips(np.diag([-1.0, -1.0, 1.0])) == (False, True, True)  # LUNA16's flip
    img = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out, c = views._oriented(img, np.diag([-1.0, -1.0, 1.0]), [[1, 0, 0]])
    np.testing.assert_array_equal(out, img[:, ::-1, ::-1])
    np.testing.assert_array_equal(c, [[1, 2, 3]])
    assert out[1, 2, 3] == img[1, 0, 0]


def _findings(direction):
    hu = np.full((30, 40, 50), -850.0, np.float32)
    hu[:, :, :3] = 40.0  # a wall on one side
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij")
    hu[(zz - 15) ** 2 + (yy - 20) ** 2 + (xx - 30) ** 2 <= 9] = 30.0
    vol = io.CTVolume(hu, [2.0, 2.0, 2.0], [0.0, 0.0, 0.0], direction)
    scan = prepare_volume(vol, spacing=2.0, window=(-1000.0, 400.0), uid="synthetic")
    zyx = np.array([[15.0, 20.0, 30.0], [5.0, 5.0, 5.0]])
    world = vol.voxel_to_world(zyx)
    return Findings(uid="synthetic", scan=scan, zyx=zyx, world=world, voxel=zyx,
                    probability=np.array([0.9, 0.2]), cg_score=np.array([0.8, 0.7]),
                    flags=np.array([1, 2]), source=np.array(["blob", "RPN"], object),
                    diameter_mm=np.array([6.0, 0.0]), file=np.array(["", ""], object))


def test_pictures_and_report(tmp_path):
    for k, d in enumerate((np.eye(3), np.diag([-1.0, -1.0, 1.0]))):
        f = _findings(d)
        views.finding_png(f, 0, 1, str(tmp_path / f"f{k}.png"))
        views.overview_png(f, [0, 1], str(tmp_path / f"o{k}.png"), 0.1)
        for n in (f"f{k}.png", f"o{k}.png"):
            assert (tmp_path / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = {"scan": "/x/chest.nii.gz", "shape": [30, 40, 50], "prepared_shape": [30, 40, 50],
         "spacing_mm": 2.0, "model": "/m", "fpr_model": "fpr_beta+syn", "model_digest": "ab" * 32,
         "threshold": 0.5, "threshold_rule": "the default 0.5", "n_findings": 1,
         "n_candidates": 2, "seconds_per_scan": 1.5}
    views.write_report(str(tmp_path / "report.md"), f, [0], ["finding_01.png"], s)
    text = (tmp_path / "report.md").read_text()
    assert "| 1 | 0.9000 | blob |" in text and "![finding 1](finding_01.png)" in text
    assert "0.2000" not in text  # below the threshold: only in candidates.csv
