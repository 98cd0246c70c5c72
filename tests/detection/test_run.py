"""nodulejax.detection.run: detections for prepared scans and their LUNA16 submission CSVs."""

import numpy as np

from nodulejax.data import io, luna16
from nodulejax.data.prepare import PreparedScan
from nodulejax.detection import detector as dt
from nodulejax.detection import run as detect_run


def _flipped_scan(shape=(20, 24, 28)):
    geom = io.CTVolume(np.zeros((0, 0, 0), np.float32), np.array([2.0, 2.0, 2.0]),
                       np.array([100.0, 50.0, -300.0]), np.diag([-1.0, -1.0, 1.0]))
    img = np.zeros(shape, np.float32)
    return PreparedScan(uid="1.2.3.4", fold=0, image=img, lung=np.ones(shape, bool),
                        geometry=geom, nodules_zyx=np.array([[5.0, 6.0, 7.0]]),
                        nodules_diam_mm=np.array([6.0]), nodule_types=np.array(["solid"], object),
                        excluded_zyx=np.zeros((0, 3)), excluded_diam_mm=np.zeros(0),
                        cand_zyx=np.zeros((0, 3)), cand_label=np.zeros(0, int))

def test_submission_round_trip_world_coordinates(tmp_path):
    scan = _flipped_scan()
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
