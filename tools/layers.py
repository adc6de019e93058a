"""The stage packages of sincere/, which of them each imports, and import cycles between
modules (imports at any depth, those inside functions included).

    python tools/layers.py          # exit 1 and a line per wrong-way import or cycle

A package may import the top-level modules (sincere/*.py) and the packages before it in LAYERS;
importing one after it is a wrong-way import. tests/test_layers.py keeps both at none.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top: each stage builds on those before it.
LAYERS = ("host", "assets", "engine", "profiles", "scheduling", "traffic", "runs", "serving",
          "grid", "simulation", "results")


def imported_packages(path: Path) -> set[str]:
    """The sincere packages a module imports, at any depth (``sincere.x...`` -> ``x``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "sincere":
                names |= ({parts[1]} if len(parts) > 1 else {a.name for a in node.names})
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("sincere.")}
    return names


def wrong_way_imports(root: Path = ROOT) -> list[str]:
    """``module imports package`` for every import of a package at or above a module's own
    layer (its own package excepted), and of a package no layer names."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    found = []
    for path in sorted((root / "sincere").rglob("*.py")):
        parts = path.relative_to(root / "sincere").parts
        own = parts[0] if len(parts) > 1 else None
        for package in sorted(imported_packages(path)):
            if package == own or not (root / "sincere" / package).is_dir():
                continue
            if package not in rank or own is None or rank[package] > rank.get(own, -1):
                found.append(f"{path.relative_to(root)} imports sincere.{package}")
    return found


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_cycles(root: Path = ROOT) -> list[list[str]]:
    """Every cycle of imports between sincere's modules (strongly connected groups of more
    than one module), each as a sorted list of module names."""
    paths = {_module_name(p, root): p for p in (root / "sincere").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                while target and target not in paths and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in paths and target != name:
                    deps.add(target)
        graph[name] = deps
    return _strongly_connected(graph)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the groups of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def main() -> int:
    found = wrong_way_imports() + [f"cycle: {' <-> '.join(group)}"
                                   for group in module_cycles()]
    print("\n".join(found) or "every import points down the stack, and no cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
