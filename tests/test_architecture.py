"""The package's import graph: no cycles, and no package imports a higher layer (DESIGN.md §2).

Every `import` / `from ... import` in every module counts, including those inside functions and under
`if TYPE_CHECKING:` (a lazy import is still a dependency) for the layering, except in the root `__init__`,
the lazy public API that by design names everything. Cycles are checked on the imports that run:
`TYPE_CHECKING` ones are left out there (a type-only back reference, e.g. metrics naming `Example`, runs
nothing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "softprompt"

# Lowest first. A module may import from its own package and from lower ranks only.
RANKS = {
    "softprompt": 0, "softprompt.errors": 0, "softprompt.files": 0,
    "softprompt.model": 1, "softprompt.tasks": 1,
    "softprompt.scoring": 2,
    "softprompt.interop": 3, "softprompt.evaluation": 3,
    "softprompt.training": 4,
    "softprompt.serve": 5, "softprompt.experiments": 5,
    "softprompt.cli": 6, "softprompt.demo": 6,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE, typing: bool = True) -> list[tuple[str, int]]:
    """(imported softprompt module, line) for every import statement in the file (`typing`: also those
    under `if TYPE_CHECKING:`)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    if not typing:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            # `from softprompt.scoring import router` imports the submodule router
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return [(m, line) for m, line in found if m == "softprompt" or m.startswith("softprompt.")]


def package_graph(root: Path = PACKAGE, typing: bool = True) -> dict[str, list[tuple[str, int]]]:
    """Module -> the softprompt modules it imports (only names that are modules of the package)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        if name == "softprompt":
            graph[name] = []  # the lazy public API
            continue
        graph[name] = [(m, line) for m, line in imports_of(path, root, typing) if m in files and m != name]
    return graph


def layer(module: str) -> str:
    """The ranked unit a module belongs to: its sub-package, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def source_file(module: str, root: Path = PACKAGE) -> str:
    """The file that defines `module`, relative to the directory holding the package's parent (src/...)."""
    path = root.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return str(path.relative_to(root.parent.parent))


def upward_imports(graph: dict[str, list[tuple[str, int]]], root: Path = PACKAGE) -> list[str]:
    """'file:line imports b (a rank -> b rank)' for imports of a higher layer or of another package of the
    same rank."""
    bad = []
    for src, targets in graph.items():
        for dst, line in targets:
            a, b = layer(src), layer(dst)
            if a == b or dst == "softprompt":  # the root itself: see root_imports
                continue
            if RANKS[b] > RANKS[a] or (RANKS[b] == RANKS[a] and b not in ("softprompt.errors", "softprompt.files")):
                bad.append(f"{source_file(src, root)}:{line} imports {dst} ({a} rank {RANKS[a]} -> {b} rank {RANKS[b]})")
    return bad


def root_imports(root: Path = PACKAGE) -> list[str]:
    """'file:line imports softprompt.<name>' for names other than `__version__` taken from the root package.

    The root `__init__` is the lazy public API: a name from it resolves to a module of any layer (cli's,
    training's), so inside the package it would hide an upward import (and start a cycle at run time).
    """
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    bad = []
    for name, path in files.items():
        if name == "softprompt":
            continue
        for module, line in imports_of(path, root):
            head, _, attr = module.partition(".")
            if attr and "." not in attr and module not in files and attr != "__version__":
                bad.append(f"{source_file(name, root)}:{line} imports {module} from the public API "
                           f"({layer(name)} rank {RANKS.get(layer(name))} -> {head}: only __version__ may be)")
    return bad


def find_cycle(graph: dict[str, list[tuple[str, int]]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt, _ in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_has_a_layer():
    assert all(layer(m) in RANKS for m in package_graph()), sorted({layer(m) for m in package_graph()} - set(RANKS))


def test_no_import_cycle():
    cycle = find_cycle(package_graph(typing=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_import():
    assert upward_imports(package_graph()) == []


def test_only_the_version_is_imported_from_the_root():
    assert root_imports() == []


def test_every_subpackage_says_what_it_is_for():
    for init in PACKAGE.glob("*/__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


@pytest.mark.parametrize("edge", ["cycle", "upward", "sideways", "root"])
def test_the_checks_catch_what_they_are_for(tmp_path, edge):
    """The checker itself, on a synthetic package: a cycle, a lower layer importing a higher one, a package
    importing another of its rank, and a name other than __version__ taken from the public API."""
    root = tmp_path / "src" / "softprompt"
    for pkg in ("model", "scoring", "serve", "experiments"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text('"""x"""\n')
    (root / "__init__.py").write_text("__version__ = '0'\n")
    (root / "model" / "ok.py").write_text("from softprompt import __version__\nfrom .. import errors\n")
    (root / "errors.py").write_text("")
    if edge == "cycle":
        (root / "scoring" / "a.py").write_text("from softprompt.scoring.b import f\n")
        (root / "scoring" / "b.py").write_text("def f():\n    from softprompt.scoring import a\n")
    elif edge == "upward":
        (root / "model" / "a.py").write_text("from ..scoring import b\n")  # relative, model (1) -> scoring (2)
        (root / "scoring" / "b.py").write_text("")
    elif edge == "sideways":
        (root / "serve" / "a.py").write_text("import os\n\n\ndef f():\n    import softprompt.experiments.b\n")
        (root / "experiments" / "b.py").write_text("")
    else:
        (root / "model" / "a.py").write_text("from softprompt import __version__, train\n")
    graph = package_graph(root)
    cycle, upward, public = find_cycle(graph), upward_imports(graph, root), root_imports(root)
    if edge == "cycle":
        assert cycle in (["softprompt.scoring.a", "softprompt.scoring.b", "softprompt.scoring.a"],
                         ["softprompt.scoring.b", "softprompt.scoring.a", "softprompt.scoring.b"])
        assert not upward and not public
    elif edge == "upward":
        assert cycle is None and not public
        assert upward and all(u.startswith("src/softprompt/model/a.py:1 imports softprompt.scoring") for u in upward)
        assert "(softprompt.model rank 1 -> softprompt.scoring rank 2)" in upward[0], upward
    elif edge == "sideways":
        assert cycle is None and not public
        assert upward == ["src/softprompt/serve/a.py:5 imports softprompt.experiments.b "
                          "(softprompt.serve rank 5 -> softprompt.experiments rank 5)"], upward
    else:
        assert cycle is None and not upward
        assert len(public) == 1 and public[0].startswith("src/softprompt/model/a.py:1 imports softprompt.train"), public


def test_the_public_api_resolves_lazily():
    """Every name `softprompt` exports resolves to its object, and `import softprompt` alone loads no torch."""
    import subprocess
    import sys

    import softprompt

    for name in softprompt.__all__:
        assert getattr(softprompt, name) is not None, name
    loaded = subprocess.run([sys.executable, "-c", "import sys, softprompt; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
