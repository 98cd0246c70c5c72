"""docs/layout.md against the tree: every folder it names exists, and every module of
``nodulejax/``, ``configs/``, ``benchmarks/`` and ``analysis/`` is named in its folder's
entry, so the layout a newcomer reads stays the layout on disk."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entries() -> dict[str, str]:
    """``{folder/: text of its entry}`` from the layout's code block (an entry is a line
    starting at column 0 and its indented continuation lines)."""
    text = open(os.path.join(ROOT, "docs", "layout.md"), encoding="utf-8").read()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    out, key = {}, None
    for line in block.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            key, _, rest = line.partition(" ")
            out[key] = rest
        elif key is not None:
            out[key] += " " + line.strip()
    return out


def _modules(folder: str) -> list[tuple[str, str]]:
    """(path, module name) of every .py file under ``folder`` but __init__ / __main__."""
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        if "__pycache__" in dirpath:
            continue
        for f in files:
            if f.endswith(".py") and f not in ("__init__.py", "__main__.py"):
                found.append((os.path.relpath(os.path.join(dirpath, f), ROOT), f[:-3]))
    return found


def test_every_folder_of_the_layout_exists():
    for key in _entries():
        for path in key.split():
            assert os.path.exists(os.path.join(ROOT, path)), f"docs/layout.md names {path}"


def test_every_module_is_named_in_its_folders_entry():
    entries = _entries()
    missing = []
    for top in ("nodulejax", "configs", "benchmarks", "analysis"):
        for path, name in _modules(top):
            parts = path.split(os.sep)
            key = f"{parts[0]}/{parts[1]}/" if top == "nodulejax" and len(parts) > 2 \
                else (path if top == "nodulejax" else f"{top}/")
            text = entries.get(key, "")
            if key != path and not re.search(rf"\b{re.escape(name)}\b", text):
                missing.append(path)
    assert not missing, f"modules missing from docs/layout.md: {missing}"
