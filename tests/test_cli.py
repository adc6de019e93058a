"""The shared constants-to-flags helper (SPEC section 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sincere.cli import build_parser, flag_name, parse_constants, unknown_arguments_message

SCRIPT = '''"""A test script."""
from sincere.cli import parse_constants

SLA = 60.0  # the SLA in seconds
RESULTS_DIR = "results"  # where runs go
SLAS = [40, 60]  # several SLAs
REPEATS = 1  # runs per cell
JITTER = True  # draw durations
MODEL_MIX = {"a": 0.5, "b": 0.5}  # share of each model
NAME = "x"  # a name

cfg = parse_constants(globals())
print(cfg.SLA, cfg.RESULTS_DIR, cfg.SLAS, cfg.REPEATS, cfg.JITTER, cfg.MODEL_MIX)
'''


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    return path


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=root, env={"PYTHONPATH": str(root)}, timeout=60)


def test_flag_names() -> None:
    assert flag_name("SLA") == "--sla"
    assert flag_name("RESULTS_DIR") == "--results-dir"


def test_defaults_and_overrides(script: Path) -> None:
    assert run(script).stdout.split("\n")[0] == (
        "60.0 results [40, 60] 1 True {'a': 0.5, 'b': 0.5}")
    out = run(script, "--sla", "40", "--results-dir", "out/", "--slas", "40", "60", "80",
              "--repeats", "3", "--jitter", "false", "--model-mix", "a=1", "b=3").stdout
    assert out.split("\n")[0] == "40.0 out/ [40, 60, 80] 3 False {'a': 1.0, 'b': 3.0}"


def test_bare_boolean_flag_means_true() -> None:
    cfg = parse_constants({"TINY": False, "RANDOM": False}, ["--tiny"])
    assert cfg.TINY is True and cfg.RANDOM is False


def test_help_lists_every_constant_with_comment_and_default(script: Path) -> None:
    out = run(script, "--help").stdout
    for flag, text in [("--sla", "the SLA in seconds (default: 60.0)"),
                       ("--results-dir", "where runs go (default: results)"),
                       ("--slas", "several SLAs (default: 40 60)"),
                       ("--model-mix", "share of each model (default: a=0.5 b=0.5)"),
                       ("--name", "a name (default: x)")]:
        assert flag in out and text in " ".join(out.split()), flag


def test_bad_values_are_refused(script: Path) -> None:
    for args in (["--sla", "soon"], ["--model-mix", "a"], ["--jitter", "maybe"],
                 ["--unknown", "1"]):
        result = run(script, *args)
        assert result.returncode == 2 and "error" in result.stderr, args


def test_positional_constant() -> None:
    cfg = parse_constants({"RESULTS_DIR": "results", "OUT": ""}, ["mine"],
                          positional="RESULTS_DIR")
    assert cfg.RESULTS_DIR == "mine"


def test_a_flag_must_name_a_constant_in_full() -> None:
    """No abbreviations: --max-queue must not set MAX_QUEUE_DELAY_S where there is no
    MAX_QUEUE; the error names the close flags."""
    constants = {"MAX_QUEUE_DELAY_S": 1.0, "MAX_NEW_TOKENS": 50}
    with pytest.raises(SystemExit) as stop:
        parse_constants(constants, ["--max-queue", "200"])
    assert stop.value.code == 2
    message = unknown_arguments_message(["--max-queue", "200"],
                                        build_parser(constants))
    assert message.startswith("unknown flag --max-queue (did you mean --max-queue-delay-s")
    assert parse_constants(constants, ["--max-queue-delay-s", "2"]).MAX_QUEUE_DELAY_S == 2.0
