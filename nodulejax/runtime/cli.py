"""One way to call every tool: absl flags, ``--config`` with ``--config.x=`` overrides, and
one-line errors.

Every entry point (``train.py``, ``attack.py``, each ``python -m nodulejax...`` tool) is

    sys.exit(run_main("prog", define_flags, main, doc=__doc__, config="required"))

:func:`run_main` builds a fresh ``absl.flags.FlagValues`` (so tools never fight over global
flags), defines ``--config`` (``ml_collections.config_flags.DEFINE_config_file``,
``lock_config=True``) and ``-v/--verbosity``, checks the config file and every
``--config.a.b=`` override against the loaded config before absl parses them (an unknown
field names the nearest valid ones, :func:`nearest_field`), configures the host devices from the
config (``devices.configure_from``) and JAX's persistent compilation cache
(``compilation.configure_from``), quiets library warnings that say nothing to a user
(:func:`quiet_library_logs`) and turns every error a user can cause (a
:class:`~nodulejax.errors.NoduleJaxError`, a flag error, an ``OSError`` on a path) into one
line on stderr and exit code 2. ``-v 1`` (or more) shows the traceback instead.
"""

from __future__ import annotations

import json
import logging as pylogging
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence

from absl import flags, logging
from ml_collections import config_flags

from nodulejax.errors import ConfigError, NoduleJaxError, close_names
from nodulejax.runtime import compilation, devices
from nodulejax.runtime.config_tools import config_to_dict, flatten, load_config
from nodulejax.runtime.files import atomic_write_text

__all__ = ["run_main", "nearest_field", "check_overrides", "config_spec", "quiet_library_logs",
           "help_text", "print_json_line", "USER_ERRORS"]

#: errors a user can cause; run_main prints them as one line
USER_ERRORS = (NoduleJaxError, flags.Error, OSError)

# library log lines that outnumber the useful ones and need no action (Orbax restores)
_NOISE = re.compile(r"metadata|read only|read-only|read_only|sharding|TypeHandlerRegistry|"
                    r"ArrayMetadata|custom_metadata", re.IGNORECASE)
_HELP_ARGS = ("-h", "--help", "--helpshort", "--helpfull", "-help")


def nearest_field(name: str, names: Iterable[str], n: int = 3) -> str:
    """``"; nearest: a, b"`` for the dotted config fields closest to ``name``
    (:func:`nodulejax.errors.close_names`); else those closest in their last part, else the
    fields next to it (``"; fields of fpr: ..."``), or ``""``."""
    names = sorted(set(names))
    close = close_names(name, names, n)
    parent = name.rpartition(".")[0]
    if not close:  # a mistyped last part: compare the last dotted part only
        last = {k.rsplit(".", 1)[-1]: k for k in names if k.rpartition(".")[0] == parent}
        close = [last[k] for k in close_names(name.rsplit(".", 1)[-1], last, n, cutoff=0.6)]
    if not close and parent:  # nothing alike: the fields next to it
        sib = [k for k in names if k.rpartition(".")[0] == parent]
        return f"; fields of {parent}: {', '.join(sib)}" if sib else ""
    return f"; nearest: {', '.join(close)}" if close else ""


def config_spec(argv: Sequence[str], name: str = "config") -> str | None:
    """The value of ``--config`` in ``argv`` (``--config X`` or ``--config=X``), or None."""
    for i, a in enumerate(argv):
        if a in (f"--{name}", f"-{name}"):
            return argv[i + 1] if i + 1 < len(argv) else None
        if a.startswith((f"--{name}=", f"-{name}=")):
            return a.split("=", 1)[1]
    return None


def check_overrides(config, argv: Sequence[str], name: str = "config") -> None:
    """ConfigError naming the first ``--config.a.b=`` override of ``argv`` whose field
    ``config`` lacks, with the nearest valid field names."""
    valid = set(flatten(config_to_dict(config), inner=True))
    for a in argv:
        m = re.match(rf"^--?(?:no)?{name}\.([^=\s]+)", a)
        if not m:
            continue
        path = re.sub(r"\[.*?\]", "", m.group(1))
        if path not in valid:
            raise ConfigError(f"--{name}.{path}: no such config field{nearest_field(path, valid)}")


def _precheck_config(argv: Sequence[str], required: bool) -> None:
    spec = config_spec(argv)
    if spec is None:
        if required:
            raise flags.IllegalFlagValueError("--config is required (a file in configs/)")
        if any(re.match(r"^--?(no)?config\.", a) for a in argv):
            raise ConfigError("--config.x overrides need a --config file")
        return
    try:
        config = load_config(spec)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith("--config") else f"--config {spec}: {msg}") \
            from None
    check_overrides(config, argv)


class _Quiet(pylogging.Filter):
    def filter(self, record):  # noqa: A003 - logging API
        if record.levelno >= pylogging.ERROR or "orbax" not in record.pathname:
            return True
        return not _NOISE.search(str(record.msg))


def quiet_library_logs(verbosity: int = -1) -> None:
    """Log WARNING and above (INFO with ``verbosity >= 0``); drop Orbax's metadata /
    read-only / sharding notes on restores unless ``verbosity >= 1``."""
    logging.set_verbosity(logging.WARNING if verbosity < 0 else
                          logging.INFO if verbosity == 0 else logging.DEBUG)
    warnings.filterwarnings("ignore", module=r"orbax.*")
    warnings.filterwarnings("ignore", message=r".*[Ss]harding info not provided.*")
    if verbosity < 1:
        for lg in (pylogging.getLogger("absl"), pylogging.getLogger()):
            if not any(isinstance(f, _Quiet) for f in lg.filters):
                lg.addFilter(_Quiet())
        for h in pylogging.getLogger().handlers + pylogging.getLogger("absl").handlers:
            if not any(isinstance(f, _Quiet) for f in h.filters):
                h.addFilter(_Quiet())


def print_json_line(obj, path: str | None = None) -> None:
    """A probe's result: ``obj`` as one JSON line on stdout, and the same line written
    (atomically) to ``path`` when one is given."""
    line = json.dumps(obj)
    print(line, flush=True)
    if path:
        atomic_write_text(path, line + "\n")


def help_text(prog: str, doc: str | None, fv: flags.FlagValues, required=()) -> str:
    """The tool's docstring and every flag with its help and default."""
    lines = [f"usage: {prog} [flags]", "", (doc or "").strip(), "", "flags:"]
    seen = {id(f): f for fl in fv.flags_by_module_dict().values() for f in fl}
    for flag in sorted(seen.values(), key=lambda f: f.name):
        short = f"-{flag.short_name}, " if flag.short_name else ""
        default = ("required" if flag.name in required else "default: none") \
            if flag.default is None else f"default: {flag.default_as_str or repr(flag.default)}"
        lines.append(f"  {short}--{flag.name}: {flag.help} ({default})")
    return "\n".join(lines)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, flags.Error):
        return text.replace("flag --config=", "--config ").replace("Error whilst parsing "
                                                                  "config file: ", "")
    return f"{type(e).__name__}: {text}"


def _define(fv, define, config: str | None, argv):
    flags.DEFINE_integer("verbosity", -1, "log level: -1 warnings only, 0 info, 1 info and "
                         "tracebacks of errors", short_name="v", flag_values=fv)
    required = []
    if config:
        config_flags.DEFINE_config_file(
            "config", None, "config file (configs/*.py or configs/experiments.py:ROW[,SCALE]); "
            "any field can be overridden with --config.a.b=VALUE", flag_values=fv,
            lock_config=True, sys_argv=list(argv))
        if config == "required":
            required.append("config")
    required += list(define(fv) or ())
    return required


def run_main(prog: str, define: Callable[[flags.FlagValues], Iterable[str] | None],
             main: Callable[[flags.FlagValues], int | None], argv: Sequence[str] | None = None,
             *, doc: str | None = None, config: str | None = "required",
             positional: bool = False) -> int:
    """Parse ``argv`` (the arguments after the program name; default ``sys.argv[1:]``) with
    the flags ``define(fv)`` adds to a fresh
    FlagValues (it returns the names of required flags), run ``main(fv)`` and return its exit
    code; a user's mistake is one line on stderr and exit code 2.

    ``config``: "required", "optional" or None (the tool takes no ``--config``);
    ``positional``: arguments other than flags are allowed and passed: ``main(fv, args)``."""
    argv = list(sys.argv) if argv is None else [prog, *argv]
    fv = flags.FlagValues()
    required = _define(fv, define, config, argv)
    if any(a in _HELP_ARGS for a in argv[1:]):
        print(help_text(prog, doc, fv, required))
        return 0
    verbose = _verbosity(argv)
    try:
        if config:
            _precheck_config(argv, config == "required")
        rest = fv(argv)
        missing = [n for n in required if fv[n].value is None]
        if missing:
            raise flags.IllegalFlagValueError(
                "missing required flag(s): " + ", ".join(f"--{n}" for n in missing))
        if len(rest) > 1 and not positional:
            raise flags.IllegalFlagValueError(f"unexpected arguments: {' '.join(rest[1:])}")
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        quiet_library_logs(fv["verbosity"].value)
        if config and fv["config"].value is not None:
            devices.configure_from(fv["config"].value)  # before the first JAX computation
            compilation.configure_from(fv["config"].value)  # before the first compilation
        rc = main(fv, rest[1:]) if positional else main(fv)
    except USER_ERRORS as e:
        if verbose >= 1:
            raise
        print(f"{prog}: {_one_line(e)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else int(rc)


def _verbosity(argv) -> int:
    for i, a in enumerate(argv):
        m = re.match(r"^--?(?:v|verbosity)(?:=(-?\d+))?$", a)
        if m:
            val = m.group(1) or (argv[i + 1] if i + 1 < len(argv) else "0")
            try:
                return int(val)
            except ValueError:
                return 0
    return -1
