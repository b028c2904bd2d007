"""The package's structure: no import cycles between stage2's modules (lazy imports and type-hint imports count)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

from helpers import REPO

PACKAGE = REPO / "stage2"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: Set[str], type_checking: bool = False) -> Set[str]:
    """The stage2 modules a file imports anywhere (under `if TYPE_CHECKING:` only with `type_checking`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    checking = set() if type_checking else {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found: Set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    found.add(target)
                elif base in modules:
                    found.add(base)
    return found - {module_name(path)}


def test_no_import_cycles():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    # Imports for type hints count: a cycle of names is a cycle of ideas, even when Python never runs it.
    graph: Dict[str, Set[str]] = {module_name(p): imports(p, modules, type_checking=True) for p in files}
    # A package's __init__ re-exporting its own submodules is not a cycle of the code's logic.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not (t.startswith(name + ".") and (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists())}
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# Which packages a package may import: cores never reach up into the stages, and the reader stays
# importable in a training environment with numpy alone.
ALLOWED = {
    "stage2.io": {"stage2.errors", "stage2.documents", "stage2.config", "stage2.steps", "stage2.io"},
    "stage2.lid": {"stage2.errors", "stage2.lid"},
    "stage2.dedup": {"stage2.io", "stage2.dedup"},
    "stage2.steps": {"stage2.errors", "stage2.documents", "stage2.steps", "stage2.lid"},
    "stage2.tokenizer": {"stage2.errors", "stage2.documents", "stage2.io", "stage2.tokenizer"},
    "stage2.shards": {"stage2.errors", "stage2.shards", "stage2.io"},
    "stage2.reader": {"stage2.errors", "stage2.shards.format"},
}


def test_cores_do_not_import_the_stages():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    wrong = []
    for path in files:
        name = module_name(path)
        rule = next((allowed for prefix, allowed in ALLOWED.items() if name == prefix or name.startswith(prefix + ".")), None)
        if rule is None:
            continue
        for target in imports(path, modules):
            if not any(target == a or target.startswith(a + ".") for a in rule):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong
