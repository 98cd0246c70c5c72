"""One way to call every tool (nodulejax.runtime.cli): --config with checked overrides,
one-line errors naming the file / field / model and the nearest valid names, help with
defaults; each entry point's user mistakes, in process and (a few) as a user types them."""

import os
import subprocess
import sys

import pytest
from absl import flags

from nodulejax.errors import ConfigError
from nodulejax.evaluation import table3
from nodulejax.models import summary
from nodulejax.runtime import cli
from nodulejax.runtime.config_tools import load_config
from nodulejax.study import toy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def _define(fv):
    flags.DEFINE_string("out", None, "where to write", flag_values=fv)
    flags.DEFINE_integer("n", 3, "how many", flag_values=fv)
    return ["out"]


def _tool(argv, main=lambda fv: print("lr", fv["config"].value.fpr.lr), **kw):
    return cli.run_main("tool", _define, main, argv, doc="A tool.", **kw)


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_nearest_names_a_close_field_or_the_siblings():
    names = ["fpr.lr", "fpr.steps", "eval.bootstrap", "eval.fps"]
    assert cli.nearest_field("fpr.lrr", names).startswith("; nearest: fpr.lr")
    assert cli.nearest_field("eval.no_such_field", names) == \
        "; fields of eval: eval.bootstrap, eval.fps"
    assert cli.nearest_field("zzz", names) == ""


def test_override_is_applied_and_flags_parsed(capsys):
    assert _tool(["--config", TINY, "--out", "x", "--config.fpr.lr=0.5"]) == 0
    assert "lr 0.5" in capsys.readouterr().out


@pytest.mark.parametrize("argv, names", [
    (["--config.fpr.lrr=1"], ["--config.fpr.lrr", "no such config field", "nearest: fpr.lr"]),
    (["--config.eval.no_such_field=1"], ["--config.eval.no_such_field", "eval.bootstrap"]),
    (["--config.fpr.lr=abc"], ["--config.fpr.lr=abc"]),
    (["--bogus=1"], ["bogus"]),
])
def test_mistyped_override_or_flag_is_one_line(capsys, argv, names):
    assert _tool(["--config", TINY, "--out", "x", *argv]) == 2
    err = _one_line(capsys)
    assert err.startswith("tool: ")
    for n in names:
        assert n in err, (n, err)


@pytest.mark.parametrize("spec, names", [
    ("configs/nope.py", ["--config configs/nope.py", "no such file"]),
    ("configs/experiments.py:beta+synn", ["beta+synn", "nearest: beta+syn"]),
])
def test_bad_config_file_or_row_is_one_line(capsys, spec, names):
    assert _tool(["--config", os.path.join(ROOT, spec) if "nope" not in spec else spec,
                  "--out", "x"]) == 2
    err = _one_line(capsys)
    for n in names:
        assert n in err, (n, err)


def test_missing_required_flag_and_config(capsys):
    assert _tool(["--config", TINY]) == 2
    assert "--out" in _one_line(capsys)
    assert _tool(["--out", "x"]) == 2
    assert "--config" in _one_line(capsys)


def test_verbosity_shows_the_traceback():
    def boom(fv):
        raise ConfigError("config.x: bad")
    with pytest.raises(ConfigError, match="config.x"):
        _tool(["--config", TINY, "--out", "x", "-v", "1"], main=boom)


def test_help_lists_every_flag_with_its_default(capsys):
    assert _tool(["--help"]) == 0
    out = capsys.readouterr().out
    assert "A tool." in out
    assert "--n: how many (default: '3')" in out and "--out: where to write (required)" in out
    assert "--config" in out and "-v, --verbosity" in out


def test_check_overrides_accepts_every_real_field():
    c = load_config(TINY)
    cli.check_overrides(c, ["--config.fpr.lr=1", "--noconfig.train.progress",
                            "--config.data.hu_window=(-1000, 400)", "--config.rerun=cg"])
    with pytest.raises(ConfigError, match="nearest: cg.steps"):
        cli.check_overrides(c, ["--config.cg.stepz=3"])


# ------------------------------------------------------------------- each entry point
def test_summary_table3_and_toy_mistakes_are_one_line(tmp_path, capsys):
    assert summary.main(["--config", "configs/nope.py"]) == 2
    assert "configs/nope.py" in _one_line(capsys)
    assert summary.main(["--config", TINY, "--config.fpr.patch_sz=3"]) == 2
    assert "nearest: fpr.patch_size" in _one_line(capsys)
    assert table3.main([str(tmp_path), "--out", str(tmp_path / "t.md")]) == 2
    assert "no froc.json" in _one_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert toy.main(["--out", str(blocker / "sub")]) == 2
    assert f"--out {blocker / 'sub'}" in _one_line(capsys)


def _user(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_train_and_attack_as_a_user_types_them(tmp_path):
    """Subprocesses: one line on stderr, exit code 2, the field / model / file named."""
    for args, names in [
        (["train.py", "--config", TINY, "--workdir", str(tmp_path), "--config.fpr.lrr=1"],
         ["--config.fpr.lrr", "nearest: fpr.lr"]),
        (["train.py", "--config", "configs/experiments.py:beta+synn", "--workdir",
          str(tmp_path)], ["beta+synn", "nearest: beta+syn"]),
        (["attack.py", "--config", TINY, "--workdir", str(tmp_path), "--mode", "stress",
          "--models", "beta+sin"], ["beta+sin", "nearest: beta+syn"]),
    ]:
        r = _user(*args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
        for n in names:
            assert n in r.stderr, (n, r.stderr)


def test_train_help_lists_the_stages_and_flag_defaults():
    r = _user("train.py", "--help")
    assert r.returncode == 0, r.stderr
    for s in ("data", "prepare", "augmented", "report", "fpr_augmented", "--workdir",
              "--config", "(required)", "default:"):
        assert s in r.stdout, s


def test_orbax_restore_notes_are_filtered(tmp_path, caplog):
    import numpy as np
    from ml_collections import ConfigDict

    from nodulejax.runtime.checkpoint import ModelCheckpoints, load_params, model_dir

    cli.quiet_library_logs(-1)
    with ModelCheckpoints(model_dir(str(tmp_path), "m"), config=ConfigDict({"a": 1}),
                          async_save=False) as m:
        m.save(0, {"params": {"w": np.ones(3, np.float32)}})
    caplog.clear()
    assert load_params(str(tmp_path), "m")["w"].shape == (3,)
    assert "read_only" not in caplog.text and "etadata" not in caplog.text


def test_print_json_line_prints_and_writes_the_same_line(tmp_path, capsys):
    out = tmp_path / "r.json"
    cli.print_json_line({"gap": -0.1, "n": 3}, str(out))
    printed = capsys.readouterr().out
    assert printed == out.read_text() == '{"gap": -0.1, "n": 3}\n'
    cli.print_json_line([1], None)  # no path: stdout only
    assert capsys.readouterr().out == "[1]\n"
