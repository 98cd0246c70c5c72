"""The package's import structure: layers that import one way, no cycles, no lazy imports.

``nodulejax/`` is organised by layer; a module may import from its own layer and from the
layers below it, never from above, and ``detection`` and ``evaluation`` (siblings) never import
each other::

    errors, experiments -> runtime -> data -> models -> losses -> adversarial -> train
        -> detection | evaluation -> study -> train.py, attack.py

Project imports stand at the top of each file (only heavy libraries - matplotlib, tqdm,
torch, SimpleITK - may load inside a function), there is no import cycle between modules, and
the library never imports the top-level ``configs`` folder (configs load by path). Each rule's
failure names the file and line. The checker reads the source with ``ast`` (nothing is
imported), so it runs in milliseconds; ``test_checker_finds_*`` show that it fails on a
deliberately broken tree.
"""

from __future__ import annotations

import ast
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nodulejax"
# rank of each layer (a module may import ranks <= its own; equal ranks only within a layer)
LAYERS = {"errors": 0, "experiments": 1, "runtime": 2, "data": 3, "models": 4, "losses": 5,
          "adversarial": 6, "train": 7, "detection": 8, "evaluation": 8, "study": 9}
ENTRY_POINTS = ("train.py", "attack.py")
ENTRY_RANK = 10
MAX_TOP_MODULES = 6


@dataclass(frozen=True)
class Import:
    src: str  # importing module (dotted)
    dst: str  # imported project module (dotted)
    path: str  # file, relative to the root
    line: int
    lazy: bool  # inside a function or class body


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(root: Path, module: str, name: str | None) -> str:
    """``from module import name``: the submodule ``module.name`` if it exists, else module."""
    if name is not None:
        sub = root.joinpath(*(module + "." + name).split("."))
        if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
            return f"{module}.{name}"
    return module


def collect(root: Path, files) -> list[Import]:
    """Every import of a ``nodulejax`` or ``configs`` module in ``files``."""
    out = []
    for path in files:
        src = _module_name(root, path) if path.name not in ENTRY_POINTS else path.stem
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

        rel = str(path.relative_to(root))

        def visit(node, lazy, src=src, rel=rel):
            for child in ast.iter_child_nodes(node):
                inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.ClassDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    for a in child.names:
                        if a.name.split(".")[0] in (PACKAGE, "configs"):
                            out.append(Import(src, a.name, rel, child.lineno, lazy))
                elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                    if child.module.split(".")[0] in (PACKAGE, "configs"):
                        for a in child.names:
                            out.append(Import(src, _resolve(root, child.module, a.name),
                                              rel, child.lineno, lazy))
                visit(child, inner)

        visit(tree, False)
    return out


def _rank(module: str) -> tuple[int, str]:
    """(layer rank, layer name) of a dotted module (entry points rank above everything)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return ENTRY_RANK, parts[0]
    layer = parts[1] if len(parts) > 1 else ""
    return LAYERS.get(layer, -1), layer


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def check(root: Path) -> list[str]:
    """Every violation of the rules of this module's docstring, one line each."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    files += [root / e for e in ENTRY_POINTS if (root / e).exists()]
    imports = collect(root, files)
    problems = []
    for imp in imports:
        where = f"{imp.path}:{imp.line}"
        if imp.dst.split(".")[0] == "configs" and imp.src.startswith(PACKAGE):
            problems.append(f"{where}: library module {imp.src} imports {imp.dst} "
                            "(configs load by path: pass the config or its path)")
            continue
        if imp.lazy:
            problems.append(f"{where}: project import of {imp.dst} inside a function or class "
                            f"of {imp.src} (move it to the top of the file)")
        (rs, ls), (rd, ld) = _rank(imp.src), _rank(imp.dst)
        if rs == -1 or (rd == -1 and imp.dst.startswith(PACKAGE + ".")):
            bad = imp.src if rs == -1 else imp.dst
            problems.append(f"{where}: {bad} is in no layer (known: {', '.join(LAYERS)})")
        elif rd > rs or (rd == rs and ld != ls and imp.src.startswith(PACKAGE)):
            problems.append(f"{where}: {imp.src} (layer {ls or 'nodulejax'}) imports "
                            f"{imp.dst} (layer {ld}): upward or sideways import")
    edges: dict[str, set[str]] = {}
    first: dict[tuple[str, str], Import] = {}
    for imp in imports:
        if imp.dst.startswith(PACKAGE) and imp.dst != imp.src:
            edges.setdefault(imp.src, set()).add(imp.dst)
            first.setdefault((imp.src, imp.dst), imp)
    for comp in _cycles(edges):
        links = [first[(a, b)] for a in comp for b in comp if (a, b) in first]
        problems.append("import cycle between " + ", ".join(comp) + ": " + "; ".join(
            f"{i.path}:{i.line} imports {i.dst}" for i in links))
    top = sorted(p.name for p in (root / PACKAGE).glob("*.py"))
    if len(top) > MAX_TOP_MODULES:
        problems.append(f"{PACKAGE}/ holds {len(top)} modules directly (at most "
                        f"{MAX_TOP_MODULES}): {', '.join(top)}")
    return problems


# ------------------------------------------------------------------------------- the tests
def test_the_package_imports_one_way_without_cycles_or_lazy_imports():
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def test_checker_finds_a_deliberate_cycle(tmp_path):
    root = _tree(tmp_path, {
        "nodulejax/__init__.py": "",
        "nodulejax/data/__init__.py": "",
        "nodulejax/data/a.py": "from nodulejax.data.b import f\n",
        "nodulejax/data/b.py": "import os\n\nfrom nodulejax.data import a\n",
    })
    problems = check(root)
    assert len(problems) == 1, problems
    assert "import cycle between nodulejax.data.a, nodulejax.data.b" in problems[0]
    assert os.path.join("nodulejax", "data", "a.py") + ":1" in problems[0]
    assert os.path.join("nodulejax", "data", "b.py") + ":3" in problems[0]


def test_checker_finds_upward_sideways_lazy_and_configs_imports(tmp_path):
    root = _tree(tmp_path, {
        "nodulejax/__init__.py": "",
        "nodulejax/data/__init__.py": "",
        "nodulejax/data/io.py": "from nodulejax.train.loop import fit\n",
        "nodulejax/train/__init__.py": "",
        "nodulejax/train/loop.py": "def fit():\n    from nodulejax.data import io\n",
        "nodulejax/detection/__init__.py": "",
        "nodulejax/detection/run.py": "from nodulejax.evaluation import froc\n",
        "nodulejax/evaluation/__init__.py": "",
        "nodulejax/evaluation/froc.py": "from configs import paper\n",
    })
    text = "\n".join(check(root))
    assert "nodulejax/data/io.py:1: nodulejax.data.io (layer data) imports " \
           "nodulejax.train.loop (layer train)" in text.replace(os.sep, "/")
    assert "loop.py:2: project import of nodulejax.data.io inside a function" in text
    assert "run.py:1: nodulejax.detection.run (layer detection) imports " \
           "nodulejax.evaluation.froc (layer evaluation)" in text
    assert "froc.py:1: library module nodulejax.evaluation.froc imports configs " in text
    assert "import cycle between nodulejax.data.io, nodulejax.train.loop" in text
