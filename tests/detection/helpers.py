"""What the detection tests share: an empty prepared scan in the LUNA16 orientation (x and y
flipped) with one 6 mm nodule."""

import numpy as np

from nodulejax.data import io
from nodulejax.data.prepare import PreparedScan


def flipped_scan(shape=(20, 24, 28)):
    geom = io.CTVolume(np.zeros((0, 0, 0), np.float32), np.array([2.0, 2.0, 2.0]),
                       np.array([100.0, 50.0, -300.0]), np.diag([-1.0, -1.0, 1.0]))
    img = np.zeros(shape, np.float32)
    return PreparedScan(uid="1.2.3.4", fold=0, image=img, lung=np.ones(shape, bool),
                        geometry=geom, nodules_zyx=np.array([[5.0, 6.0, 7.0]]),
                        nodules_diam_mm=np.array([6.0]), nodule_types=np.array(["solid"], object),
                        excluded_zyx=np.zeros((0, 3)), excluded_diam_mm=np.zeros(0),
                        cand_zyx=np.zeros((0, 3)), cand_label=np.zeros(0, int))
