"""JAX's persistent compilation cache (nodulejax.runtime.compilation): where "auto" points,
"off", a folder that cannot be used (one-line ConfigError naming the field, also through
run_main), and a second process that loads the first one's executable and computes the same
bits."""

import json
import os
import subprocess
import sys

import pytest

from nodulejax.errors import ConfigError
from nodulejax.runtime import cli, compilation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def test_auto_is_the_env_folder_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation.cache_dir("auto") == str(tmp_path / "xdg" / "nodulejax" / "xla")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation.cache_dir(None) == str(tmp_path / "home" / ".cache" / "nodulejax" / "xla")
    monkeypatch.setenv(compilation.ENV, str(tmp_path / "env"))
    assert compilation.cache_dir("auto") == str(tmp_path / "env")
    monkeypatch.setenv(compilation.ENV, "off")
    assert compilation.cache_dir("auto") is None
    # an explicit setting wins over the environment
    assert compilation.cache_dir(str(tmp_path / "mine")) == str(tmp_path / "mine")
    for off in ("off", "", "none", " OFF "):
        assert compilation.cache_dir(off) is None


def test_unusable_folder_is_a_config_error(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"config\.runtime\.compilation_cache.*a_file"):
        compilation.configure_compilation_cache(str(f / "xla"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not writable"):
            compilation.configure_compilation_cache(str(ro))


def test_run_main_names_the_field_of_an_unusable_cache(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    fv_seen = []
    rc = cli.run_main("tool", lambda fv: [], lambda fv: fv_seen.append(1),
                      ["--config", TINY, f"--config.runtime.compilation_cache={tmp_path}/f/xla"],
                      doc="A tool.", config="required")
    assert rc == 2 and not fv_seen
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.runtime.compilation_cache" in err, err


_CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from jax._src import monitoring
from nodulejax.runtime import compilation
hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
path = compilation.configure_compilation_cache(sys.argv[1])
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(axis=0) * 1.5 + jnp.sin(x).mean())
y = f(jnp.arange(48.0).reshape(6, 8) / 10.0)
print(json.dumps({"path": path, "hits": len(hits), "y": [float(v).hex() for v in y]}))
"""


def test_second_process_loads_the_executable_and_gets_the_same_bits(tmp_path):
    cache = tmp_path / "xla"
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(cache)], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["path"] == str(cache) and any(cache.iterdir())
    assert runs[0]["hits"] == 0 and runs[1]["hits"] >= 1
    assert runs[0]["y"] == runs[1]["y"]
