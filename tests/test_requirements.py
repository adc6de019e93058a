"""Every package the code imports is declared: requirements.txt for what runs, and
requirements-dev.txt as well for the tests (SPEC section 1). A package that arrives only as
another's dependency (``packaging`` with transformers) can vanish with that package's next
release."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL = ({p.stem for p in REPO_ROOT.rglob("*.py") if ".venv" not in p.parts}
         | {p.name for p in REPO_ROOT.iterdir() if p.is_dir()})  # the repository's own modules


def imported_modules(files: list[Path]) -> set[str]:
    """Top-level names of the absolute imports in ``files``, less the standard library and
    the repository's own modules and scripts."""
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in LOCAL}


def normalised(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirement_files: list[Path]) -> set[str]:
    """The distributions listed in the files."""
    names = set()
    for path in requirement_files:
        for line in path.read_text().splitlines():
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#")[0])
            if match:
                names.add(normalised(match.group(1)))
    return names


def undeclared(files: list[Path], requirement_files: list[Path]) -> list[str]:
    """``module (distribution)`` for each imported module whose distribution is not listed."""
    distributions = importlib.metadata.packages_distributions()
    known = declared(requirement_files)
    missing = []
    for module in sorted(imported_modules(files)):
        names = {normalised(d) for d in distributions.get(module, [module])}
        if not names & known:
            missing.append(f"{module} ({', '.join(sorted(names))})")
    return missing


RUNTIME = sorted([*REPO_ROOT.glob("*.py"), *(REPO_ROOT / "sincere").rglob("*.py"),
                  *(REPO_ROOT / "benchmarks").rglob("*.py"), *(REPO_ROOT / "tools").rglob("*.py")])
TESTS = sorted((REPO_ROOT / "tests").rglob("*.py"))


@pytest.mark.parametrize(("files", "requirement_files"), [
    (RUNTIME, ["requirements.txt"]),
    (TESTS, ["requirements.txt", "requirements-dev.txt"]),
], ids=["runtime", "tests"])
def test_every_imported_package_is_declared(files: list[Path],
                                            requirement_files: list[str]) -> None:
    assert len(files) > 10
    assert undeclared(files, [REPO_ROOT / name for name in requirement_files]) == []


def test_an_import_that_only_comes_with_another_package_is_named(tmp_path: Path) -> None:
    """The check itself: packaging (installed here, with transformers) against a list that
    names numpy only; json is the standard library's, sincere the repository's."""
    script = tmp_path / "uses_packaging.py"
    script.write_text("from packaging.version import Version\nimport numpy\nimport json\n"
                      "from sincere import schemas\n")
    (tmp_path / "requirements.txt").write_text("# arrays\nNumPy>=1.26  # any case\n")
    assert undeclared([script], [tmp_path / "requirements.txt"]) == ["packaging (packaging)"]
