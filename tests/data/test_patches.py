"""nodulejax.data.patches: patches cut around a centre, padded outside the volume."""

import numpy as np

from nodulejax.data import patches


def test_patch_centres_and_padding():
    a = np.arange(10 * 10 * 10, dtype=np.float32).reshape(10, 10, 10)
    p = patches.extract_patch(a, (5, 5, 5), 4, -1.0)
    assert p.shape == (4, 4, 4)
    np.testing.assert_array_equal(p, a[3:7, 3:7, 3:7])  # voxel 5 sits at index size // 2
    edge = patches.extract_patch(a, (0, 0, 0), 4, -1.0)
    assert edge[0, 0, 0] == -1.0 and edge[2, 2, 2] == a[0, 0, 0]
    many = patches.extract_patches(a, [(5, 5, 5), (0, 0, 0)], 4, -1.0)
    np.testing.assert_array_equal(many[0], p)
    np.testing.assert_array_equal(many[1], edge)


def test_cube_symmetries_are_distinct_and_invertible_permutations():
    x = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    seen = {patches.symmetry(x, i).tobytes() for i in range(48)}
    assert len(seen) >= 24  # the rotations of the cube, at least
    for i in range(48):
        assert sorted(patches.symmetry(x, i).ravel().tolist()) == list(range(27))
