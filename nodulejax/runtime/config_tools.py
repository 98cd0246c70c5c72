"""Configs as data: flatten, select, diff and fingerprint ``ml_collections`` configs and pytrees.

One home for what the checkpoints (refuse to resume a changed config), the augmentation pool
(refuse a pool built by another config or other weights) and the study's stage markers need:
a config as plain JSON data (:func:`config_to_dict`), dotted paths (:func:`flatten`),
fnmatch field patterns (:func:`matches`, e.g. ``"pgd.latent_*"``), the list of fields that
differ (:func:`config_diff`, :func:`nested_diff`) and short content digests
(:func:`fingerprint`, :func:`tree_digest`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np

from nodulejax.errors import ConfigError

__all__ = ["config_to_dict", "flatten", "matches", "select", "config_diff", "nested_diff",
           "fingerprint", "tree_digest", "load_config", "MISSING"]

#: the value a field has in a config that lacks it
MISSING = "<absent>"


def config_to_dict(config: Any) -> dict:
    """An ml_collections ConfigDict (or mapping) as plain JSON data (tuples -> lists)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.loads(json.dumps(config, default=repr, sort_keys=True))


def flatten(d: Mapping, prefix: str = "", inner: bool = False) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (dotted paths of every leaf); ``inner=True``
    also lists every nested mapping under its own path (``{"a": {...}, "a.b": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if inner:
                out[path] = v
            out.update(flatten(v, path + ".", inner))
        else:
            out[path] = v
    return out


def matches(key: str, patterns: Iterable[str]) -> bool:
    """Whether the dotted path ``key`` matches any fnmatch pattern (``"pool.*"``)."""
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def select(config: Any, patterns: Iterable[str], exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The flattened fields of ``config`` matching ``patterns`` and none of ``exclude``."""
    pats, ex = tuple(patterns), tuple(exclude)
    flat = flatten(config_to_dict(config))
    return {k: v for k, v in sorted(flat.items()) if matches(k, pats) and not matches(k, ex)}


def config_diff(saved: Any, current: Any, ignore: Iterable[str] = (),
                relevant: Iterable[str] | None = None) -> list[tuple[str, Any, Any]]:
    """[(field, saved_value, current_value)] for every differing field that matters.

    A field matters when it matches ``relevant`` (fnmatch patterns on dotted paths, None =
    every field) and no ``ignore`` pattern. A field one side lacks has the value
    :data:`MISSING` there."""
    a, b = flatten(config_to_dict(saved)), flatten(config_to_dict(current))
    pats = tuple(ignore)
    rel = None if relevant is None else tuple(relevant)
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, MISSING), b.get(key, MISSING)
        if va != vb and not matches(key, pats) and (rel is None or matches(key, rel)):
            diffs.append((key, va, vb))
    return diffs


def nested_diff(a: Mapping, b: Mapping, *, names=("saved", "current"), prefix: str = ""):
    """``["path: saved=.. current=.."]`` for every differing leaf of two nested dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, MISSING), b.get(k, MISSING)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += nested_diff(va, vb, names=names, prefix=f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {names[0]}={va!r} {names[1]}={vb!r}")
    return out


def fingerprint(data: Any) -> str:
    """16 hex digits of sha256 over ``data`` as canonical JSON (sorted keys)."""
    blob = json.dumps(data, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tree_digest(tree) -> str:
    """sha256 of a pytree's leaves (paths, dtypes, shapes, bytes): identifies trained weights."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0],
                             key=lambda t: jax.tree_util.keystr(t[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def load_config(spec: str):
    """``path/to/config.py`` or ``path.py:arg`` -> its ``get_config()`` / ``get_config(arg)``.

    The folder above the config file is put on ``sys.path`` so a config may import its
    siblings (``from configs import default``) from any working directory."""
    path, _, arg = str(spec).partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config {spec}: no such file {path}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if root not in sys.path:
        sys.path.insert(0, root)
    mod_spec = importlib.util.spec_from_file_location("_nodulejax_config", path)
    mod = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(mod)
    except (ImportError, SyntaxError) as e:
        raise ConfigError(f"--config {spec}: cannot load {path} ({type(e).__name__}: {e})") from e
    if not hasattr(mod, "get_config"):
        raise ConfigError(f"--config {spec}: {path} defines no get_config()")
    return mod.get_config(arg) if arg else mod.get_config()
