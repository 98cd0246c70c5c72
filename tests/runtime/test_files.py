"""nodulejax.runtime.files: atomic writes leave the old file or the new one, never a torn one."""

import json
import os

import numpy as np
import pytest

from nodulejax.runtime import files


def test_round_trips_and_no_temp_files_left(tmp_path):
    files.atomic_write_text(tmp_path / "a" / "t.txt", "héllo\n")
    files.atomic_write_json(tmp_path / "j.json", {"x": [1, 2]}, indent=1)
    files.atomic_savez(tmp_path / "z.npz", compressed=True, a=np.arange(5))
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    with np.load(tmp_path / "z.npz") as z:
        np.testing.assert_array_equal(z["a"], np.arange(5))
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert names == ["a", "j.json", "t.txt", "z.npz"]


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    files.atomic_write_json(path, {"v": 1})

    def broken(f):
        f.write('{"v": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        files.atomic_write(path, broken, text=True)
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["r.json"]
