"""sincere/ is grouped by stage: each package imports only the ones below it, and no modules
import each other in a cycle (imports inside functions count)."""

from __future__ import annotations

from pathlib import Path

from tools.layers import ROOT, module_cycles, wrong_way_imports


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_every_import_points_down_the_stack() -> None:
    assert wrong_way_imports(ROOT) == []


def test_no_module_imports_itself_back() -> None:
    assert module_cycles(ROOT) == []


def test_a_wrong_way_import_is_named(tmp_path: Path) -> None:
    # engine is below serving: an engine module that imports the server points up the stack,
    # and so does a top-level module that imports a package.
    root = write_tree(tmp_path, {
        "sincere/__init__.py": "",
        "sincere/files.py": "from sincere.engine import engine\n",
        "sincere/engine/__init__.py": "",
        "sincere/engine/engine.py": "def f():\n    from sincere.serving.server import S\n",
        "sincere/serving/__init__.py": "",
        "sincere/serving/server.py": "from sincere.engine.engine import f\n",
    })
    assert wrong_way_imports(root) == ["sincere/engine/engine.py imports sincere.serving",
                                       "sincere/files.py imports sincere.engine"]


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {
        "sincere/__init__.py": "",
        "sincere/serving/__init__.py": "",
        "sincere/serving/app.py": "from sincere.serving.openai import blueprint\n",
        "sincere/serving/openai.py": "def make():\n    from sincere.serving import app\n",
        "sincere/serving/other.py": "from sincere.serving.app import x\n",
    })
    assert module_cycles(root) == [["sincere.serving.app", "sincere.serving.openai"]]
