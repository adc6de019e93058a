"""The stage packages of sincere/ and which of them each imports (imports at any depth).

    python tools/layers.py          # exit 1 and a line per import that points up the stack

A package may import the top-level modules (sincere/*.py) and the packages before it in LAYERS;
importing one after it is a wrong-way import (tests/test_layers.py keeps it at none).
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


def main() -> int:
    found = wrong_way_imports()
    print("\n".join(found) or "every import points down the stack")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
