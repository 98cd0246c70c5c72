"""nodulejax.runtime.config_tools: flatten, select, diff, fingerprint, digest, load by path."""

import ml_collections
import numpy as np
import pytest

from nodulejax.errors import ConfigError
from nodulejax.runtime import config_tools as ct


def _cfg(lr=1e-3):
    c = ml_collections.ConfigDict()
    c.fpr = ml_collections.ConfigDict({"lr": lr, "growth": (4, 8)})
    c.pool = ml_collections.ConfigDict({"num_noise": 8})
    return c


def test_flatten_select_and_diff():
    assert ct.flatten(ct.config_to_dict(_cfg())) == {"fpr.growth": [4, 8], "fpr.lr": 1e-3,
                                                     "pool.num_noise": 8}
    assert ct.flatten({"a": {"b": 1}, "c": {}}, inner=True) == {"a": {"b": 1}, "a.b": 1, "c": {}}
    assert ct.select(_cfg(), ["fpr.*"], exclude=["fpr.lr"]) == {"fpr.growth": [4, 8]}
    assert ct.config_diff(_cfg(), _cfg(3e-4)) == [("fpr.lr", 1e-3, 3e-4)]
    assert ct.config_diff(_cfg(), _cfg(3e-4), ignore=["fpr.lr"]) == []
    assert ct.nested_diff({"a": {"b": 1}}, {"a": {"b": 2}, "c": 0}) == [
        "a.b: saved=1 current=2", f"c: saved={ct.MISSING!r} current=0"]


def test_fingerprints_follow_content():
    assert ct.fingerprint({"a": 1, "b": [1]}) == ct.fingerprint({"b": [1], "a": 1})
    assert ct.fingerprint({"a": 1}) != ct.fingerprint({"a": 2})
    t = {"w": np.ones((2, 2), np.float32)}
    assert ct.tree_digest(t) == ct.tree_digest({"w": np.ones((2, 2), np.float32)})
    assert ct.tree_digest(t) != ct.tree_digest({"w": np.zeros((2, 2), np.float32)})


def test_load_config_by_path_and_its_errors(tmp_path):
    (tmp_path / "myconfigs").mkdir()
    (tmp_path / "myconfigs" / "base.py").write_text("def get_config():\n    return {'x': 1}\n")
    (tmp_path / "myconfigs" / "child.py").write_text(
        "from myconfigs import base\n\ndef get_config(arg='2'):\n"
        "    c = base.get_config()\n    c['x'] = int(arg)\n    return c\n")
    assert ct.load_config(str(tmp_path / "myconfigs" / "child.py")) == {"x": 2}
    assert ct.load_config(f"{tmp_path / 'myconfigs' / 'child.py'}:5") == {"x": 5}
    with pytest.raises(ConfigError, match="no such file"):
        ct.load_config(str(tmp_path / "nope.py"))
    (tmp_path / "myconfigs" / "bad.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        ct.load_config(str(tmp_path / "myconfigs" / "bad.py"))
