"""JAX's persistent compilation cache: compiled XLA executables kept on disk between processes.

Why: on a small CPU host XLA's compile is a large, fixed cost of every process (10-20 s per
FPR train step at 24^3 on 2 cores, minutes at the paper's 64^3) and it sets the process's
peak memory (benchmarks/RESULTS.md, "The compiler's freed heap": ~450 MB above the lowered
step at 32^3, batch 8). With the cache, a resumed or repeated run, a second ``attack.py`` on
the same models, or any process that compiles a program compiled before, loads the
executable instead (``jax_compilation_cache_dir``; JAX keys each entry on the program, the
devices, the flags and the jax/jaxlib versions, so a changed program compiles afresh).
Loaded executables are the compiled ones: results are bitwise the same.

``config.runtime.compilation_cache``: "auto" (the default) -> ``$NODULEJAX_COMPILATION_CACHE``
when set, else ``$XDG_CACHE_HOME/nodulejax/xla`` (``~/.cache/nodulejax/xla``); "off" or ""
-> no cache; anything else -> that folder. The folder is trusted code (JAX's warning: whoever
can write to it can run code in this process), so it is a per-user folder by default. Only
programs whose compile took >= ``jax_persistent_cache_min_compile_time_secs`` (JAX's default
1 s) are written. Set it before the first compilation: the entry points (train.py,
attack.py, through :func:`nodulejax.runtime.cli.run_main`) do, with the config.
"""

from __future__ import annotations

import os

import jax

from nodulejax.errors import ConfigError

__all__ = ["ENV", "OFF", "cache_dir", "configure_compilation_cache", "configure_from"]

ENV = "NODULEJAX_COMPILATION_CACHE"
OFF = ("", "off", "none")


def cache_dir(setting: str | None = "auto") -> str | None:
    """The folder ``setting`` names (see the module docstring), or None for no cache."""
    setting = "auto" if setting is None else str(setting).strip()
    if setting == "auto":
        setting = os.environ.get(ENV, "auto").strip()
        if setting == "auto":
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                    ".cache")
            return os.path.join(base, "nodulejax", "xla")
    if setting.lower() in OFF:
        return None
    return os.path.abspath(os.path.expanduser(setting))


def configure_compilation_cache(setting: str | None = "auto") -> str | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (``setting``); returns
    the folder in use, or None when off. Raises ConfigError naming
    ``config.runtime.compilation_cache`` when the folder cannot be made or written."""
    path = cache_dir(setting)
    if path is None:
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"config.runtime.compilation_cache: cannot create the compilation "
                          f"cache folder {path!r} ({e.strerror or e}); name a writable folder "
                          f"or 'off'") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"config.runtime.compilation_cache: the compilation cache folder "
                          f"{path!r} is not writable; name a writable folder or 'off'")
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def configure_from(config) -> str | None:
    """:func:`configure_compilation_cache` with ``config.runtime.compilation_cache`` (default
    "auto"); called by the entry points next to :func:`nodulejax.runtime.devices.configure_from`."""
    return configure_compilation_cache(
        config.get("runtime", {}).get("compilation_cache", "auto"))
