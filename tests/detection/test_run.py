"""nodulejax.detection.run: detections for prepared scans and their LUNA16 submission CSVs."""

import numpy as np

from nodulejax.data import luna16
from nodulejax.detection import detector as dt
from nodulejax.detection import run as detect_run
from tests.detection.helpers import flipped_scan


def test_submission_round_trip_world_coordinates(tmp_path):
    scan = flipped_scan()
    h = np.zeros(scan.image.shape, np.float32)
    h[5, 6, 7] = 1.0
    zyx, scores = dt.heatmap_candidates(h, 3, scan.spacing, 5.0)
    xyz = dt.to_world(scan, zyx[:1])
    # direction diag(-1, -1, 1): x = 100 - 2 * 7, y = 50 - 2 * 6, z = -300 + 2 * 5
    np.testing.assert_allclose(xyz[0], [86.0, 38.0, -290.0])
    path = str(tmp_path / "p.csv")
    detect_run.write_rows(path, [(scan.uid, *xyz[0], 0.75)])
    pred = luna16.read_predictions(path, known_uids=[scan.uid])
    np.testing.assert_allclose(pred.xyz, [[86.0, 38.0, -290.0]])
    np.testing.assert_allclose(pred.probability, [0.75])
