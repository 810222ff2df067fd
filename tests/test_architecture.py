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


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """'a (rank) -> b (rank) at line n' for imports of a higher layer or of another package of the same rank."""
    bad = []
    for src, targets in graph.items():
        for dst, line in targets:
            a, b = layer(src), layer(dst)
            if a == b or dst == "softprompt":
                continue
            if RANKS[b] > RANKS[a] or (RANKS[b] == RANKS[a] and b not in ("softprompt.errors", "softprompt.files")):
                bad.append(f"{src}:{line} imports {dst} ({a} rank {RANKS[a]} -> {b} rank {RANKS[b]})")
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


def test_every_subpackage_says_what_it_is_for():
    for init in PACKAGE.glob("*/__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


@pytest.mark.parametrize("edge", ["cycle", "upward"])
def test_the_checks_catch_what_they_are_for(tmp_path, edge):
    """The checker itself, on a synthetic package: a cycle, and a lower layer importing a higher one."""
    root = tmp_path / "softprompt"
    for pkg in ("model", "scoring"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text('"""x"""\n')
    (root / "__init__.py").write_text("")
    if edge == "cycle":
        (root / "scoring" / "a.py").write_text("from softprompt.scoring.b import f\n")
        (root / "scoring" / "b.py").write_text("def f():\n    from softprompt.scoring import a\n")
    else:
        (root / "model" / "a.py").write_text("from ..scoring import b\n")  # relative, model (1) -> scoring (2)
        (root / "scoring" / "b.py").write_text("")
    graph = package_graph(root)
    if edge == "cycle":
        assert find_cycle(graph) in (["softprompt.scoring.a", "softprompt.scoring.b", "softprompt.scoring.a"],
                                     ["softprompt.scoring.b", "softprompt.scoring.a", "softprompt.scoring.b"])
    else:
        assert find_cycle(graph) is None
        upward = upward_imports(graph)
        assert upward and all(u.startswith("softprompt.model.a:1 imports softprompt.scoring") for u in upward), upward


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
