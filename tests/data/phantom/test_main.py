"""``python -m nodulejax.data.phantom`` (data/phantom/__main__.py): the writer refuses a
non-empty ``--out``, ``--overwrite`` clears only its own files, and a user's mistake is one
line on stderr."""

import os

import pytest

from nodulejax.data.phantom import __main__ as phantom_cli

TINY_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "tiny.py")


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_phantom_refuses_a_non_empty_out_and_overwrite_clears_it(tmp_path, capsys):
    out = tmp_path / "ph"
    (out / "subset0").mkdir(parents=True)
    (out / "subset0" / "old.mhd").write_text("x")
    assert phantom_cli.main(["--out", str(out), "--num-scans", "1"]) == 2
    err = _one_line(capsys)
    assert f"--out {out}" in err and "not empty" in err and "--overwrite" in err
    (out / "notes.txt").write_text("mine")  # --overwrite never deletes foreign files
    assert phantom_cli.main(["--out", str(out), "--overwrite", "--num-scans", "1"]) == 2
    assert "notes.txt" in _one_line(capsys)
    (out / "notes.txt").unlink()
    assert phantom_cli.main(["--out", str(out), "--overwrite", "--num-scans", "1", "--config",
                          TINY_CONFIG, "--size-scale", "0.3", "--max-voxels", "100000"]) == 0
    assert not (out / "subset0" / "old.mhd").exists()
    assert len(open(out / "seriesuids.csv").read().split()) == 1


@pytest.mark.parametrize("flag, value", [
    ("--num-scans", "0"), ("--size-scale", "-1"), ("--size-scale", "inf"),
    ("--num-subsets", "0"), ("--max-voxels", "5"), ("--workers", "0"),
    ("--nodules-per-scan", "nan"), ("--nodules-per-scan", "-2")])
def test_a_value_out_of_range_is_one_line_and_writes_nothing(tmp_path, capsys, flag, value):
    out = tmp_path / "ph"
    argv = ["--out", str(out), "--num-scans", "1", flag, value]
    assert phantom_cli.main(argv) == 2
    err = _one_line(capsys)
    field = "config.data.phantom." + flag[2:].replace("-", "_")
    assert "ConfigError" in err and flag in err and field in err
    assert not out.exists()


def test_shapes_flag_and_config_field(tmp_path, capsys):
    out = tmp_path / "ph"
    argv = ["--out", str(out), "--num-scans", "1", "--size-scale", "0.3", "--max-voxels",
            "100000", "--nodules-per-scan", "4"]
    assert phantom_cli.main([*argv, "--shapes", "lidc"]) == 0
    assert "(lidc shapes)" in capsys.readouterr().out
    with open(out / "nodules.csv") as f:
        header = f.readline().strip().split(",")
        shapes = [line.strip().split(",")[header.index("shape")] for line in f]
    assert any(s.startswith("lidc:") for s in shapes)
    # an unknown value: one line naming the flag, nothing written
    assert phantom_cli.main(["--out", str(tmp_path / "x"), "--shapes", "cubes"]) == 2
    err = _one_line(capsys)
    assert "--shapes" in err and "cubes" in err
    assert not (tmp_path / "x").exists()
    # without --shapes: the primitives of configs/default.py; with --config, the config's
    # field (tiny inherits the demo's LIDC shapes)
    assert phantom_cli.main(["--out", str(tmp_path / "d"), *argv[2:]]) == 0
    assert "(primitives shapes)" in capsys.readouterr().out
    assert phantom_cli.main(["--out", str(tmp_path / "c"), "--config", TINY_CONFIG,
                             *argv[2:]]) == 0
    assert "(lidc shapes)" in capsys.readouterr().out
