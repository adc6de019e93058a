"""The GPU check on this CPU (its smoke mode, run as the user runs it: a command whose child
measures), what it hands back (three files, no folder), its supervisor's time limit and its
record of a measuring process that dies, and the measures it is built from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmarks.check_report import supervise
from benchmarks.comparisons import (
    StepRecorder,
    free_running_agreement,
    prompt_of_tokens,
    teacher_forced_agreement,
)
from tests.test_benchmarks import REPO_ROOT, benchmark

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
SMALL = ["--smoke-batch", "2", "--smoke-new-tokens", "3", "--copy-rounds", "1",
         "--prompt-words", "30", "--prompt-bucket", "64", "--device", "cpu"]


def run_check(args: list[str], out_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """The check as a user runs it, with ``env`` added to this environment."""
    environ = {k: v for k, v in os.environ.items() if k != "OUT"}
    return subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(out_dir), *args],
                          capture_output=True, text=True, env={**environ, **env}, timeout=600,
                          check=False)


def files_under(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: no smoke mode")
def test_the_smoke_run_hands_back_three_files_whose_checks_mean_something(
        tmp_path: Path) -> None:
    """Every part on one model: the files fit the device tool's limits (at most 4, none
    deeper than one folder; here exactly the three, configs and tokenizers elsewhere), the
    JSON says which backend compiled the model, how often, and that every tensor and logit
    was finite."""
    out = tmp_path / "out"
    done = run_check(["--models", "llama3-8b", *SMALL], out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = files_under(out)
    assert len(files) <= 4 and all(len(f.parts) <= 2 for f in files)
    assert [f.as_posix() for f in files] == ["gpu_check.json", "gpu_check.log", "gpu_check.txt"]
    report = json.loads((out / "gpu_check.json").read_text())
    assert (report["status"], report["mode"]) == ("pass", "cpu-smoke")
    assert {p: v["status"] for p, v in report["parts"].items()} == {
        "environment": "ok", "bandwidth": "ok", "build": "ok", "swaps": "ok",
        "throughput": "ok", "warm_up": "ok", "swap_through": "ok", "summary": "ok"}
    compiled = report["compile"]
    assert (compiled["backend_asked"], compiled["backend_ran"]) == ("aot_eager", ["aot_eager"])
    [shape] = compiled["per_model"]["llama3-8b"]["shapes"]
    assert shape["compiles"] >= 1 and shape["aot_compiles"] >= 1
    assert shape["shape"] == {"batch": 2, "prompt_bucket": 64, "cache_len": 67}
    assert [t["compiles"] for t in compiled["timed_runs"]] == [0, 0, 0]
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["passed"] for c in checks.values())
    assert {"every parameter and buffer finite", "every logit finite llama3-8b",
            "token agreement llama3-8b", "every model compiled in its warm-up",
            "the backend that ran is aot_eager", "no compile in a timed run",
            "prompts up to the bucket's end decode static, longer ones eagerly"} <= set(checks)
    assert not any("CUDA" in name for name in checks)  # not measurable on a CPU: not checked
    agreement = report["token_agreement"]["llama3-8b"]
    assert (agreement["tokens"], agreement["non_finite_logits"]) == (2 * 3, 0)
    assert report["models"]["llama3-8b"]["non_finite"] == []
    assert report["compile_counts"]["eager_fallbacks"] == 1  # the prompt one token too long
    log = (out / "gpu_check.log").read_text()
    assert log.splitlines()[-1] == (out / "gpu_check.txt").read_text().splitlines()[-1]
    assert "PASS" in (out / "gpu_check.txt").read_text().splitlines()[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: no smoke mode")
def test_a_constant_from_the_environment_and_only_the_parts_named(tmp_path: Path) -> None:
    """COMPILE_BACKEND=eager in the environment: Dynamo alone compiled (no AOTAutograd), and
    the JSON says so; --parts throughput runs it with what it needs, nothing else."""
    out = tmp_path / "out"
    done = run_check(["--models", "llama3-8b", "--parts", "throughput", *SMALL], out,
                     COMPILE_BACKEND="eager")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "from the environment: COMPILE_BACKEND=eager" in done.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["settings"]["from_environment"] == ["COMPILE_BACKEND"]
    assert list(report["parts"]) == ["environment", "build", "throughput", "summary"]
    compiled = report["compile"]
    assert (compiled["backend_asked"], compiled["backend_ran"]) == ("eager", ["eager"])
    assert compiled["per_model"]["llama3-8b"]["shapes"][0]["aot_compiles"] == 0


def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    gpu_check = benchmark("gpu_check")
    assert gpu_check.main(["--out-dir", str(tmp_path), "--parts", "speed"]) == 2
    assert gpu_check.main(["--out-dir", str(tmp_path), "--models", "gemma-7b"]) == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("named", "optional", "expected"), [
    ([], False, ["environment", "bandwidth", "build", "swaps", "throughput", "warm_up",
                 "swap_through", "summary"]),
    ([], True, ["environment", "bandwidth", "build", "swaps", "throughput", "warm_up",
                "swap_through", "larger_batch", "summary"]),
    (["throughput"], False, ["environment", "build", "throughput", "summary"]),
    (["swap_through"], False, ["environment", "build", "warm_up", "swap_through", "summary"]),
    (["swaps", "larger_batch"], False, ["environment", "bandwidth", "build", "swaps",
                                        "larger_batch", "summary"]),
])
def test_the_parts_run_are_those_named_and_what_they_need(named: list[str], optional: bool,
                                                          expected: list[str]) -> None:
    assert benchmark("gpu_check").parts_to_run(named, optional) == expected


def test_constants_in_the_environment_become_flags_before_the_command_lines() -> None:
    gpu_check = benchmark("gpu_check")
    flags = gpu_check.environment_flags(
        {"COMPILE_BACKEND": "", "PARTS": [], "OPTIONAL": False, "SEED": 0},
        {"COMPILE_BACKEND": "aot_eager", "PARTS": "throughput warm_up", "OPTIONAL": "true",
         "HOME": "/root"})
    assert flags == ["--compile-backend", "aot_eager", "--parts", "throughput", "warm_up",
                     "--optional", "true"]


# --- the supervisor -------------------------------------------------------------------------

def _measuring_child(tmp_path: Path, then: str) -> list[str]:
    """A measuring process that records a figure, enters the part 'build', and then ``then``
    (Python, one line)."""
    code = textwrap.dedent(f"""
        import json, os, signal, sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from benchmarks.check_report import Report
        report = Report({str(tmp_path)!r}, "check", lambda d: "TABLE " + json.dumps(d["parts"]))
        report.set("bandwidth", {{"gbps": 12.5}})
        report.run("environment", lambda: None)
        def build():
            print("building", flush=True)
            {then}
        report.run("build", build)
    """)
    return [sys.executable, "-c", code]


def _table(data: dict) -> str:
    return "TABLE " + json.dumps(data["parts"])


def test_the_time_limit_ends_a_hung_part_and_still_hands_back_the_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A part that never ends (waiting for a signal that never comes): at the limit it is
    marked as cut short, the figure measured before is kept, and the table is printed."""
    status = supervise(_measuring_child(tmp_path, "signal.pause()"), tmp_path, "check", 10.0,
                       _table)
    assert status == 1
    data = json.loads((tmp_path / "check.json").read_text())
    assert (data["status"], data["bandwidth"]) == ("fail", {"gbps": 12.5})
    assert data["parts"]["environment"]["status"] == "ok"
    assert data["parts"]["build"]["status"] == "cut short"
    assert data["errors"] == [{"part": "build", "error": "TimeLimit",
                               "message": "cut short at 10 s"}]
    out = capsys.readouterr().out
    assert "building" in out and out.rstrip().endswith(_table(data))
    assert (tmp_path / "check.txt").read_text().strip() == _table(data)
    assert "building" in (tmp_path / "check.log").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.json", "check.log", "check.txt"]


def test_a_measuring_process_that_dies_is_recorded_with_its_signal(tmp_path: Path) -> None:
    status = supervise(_measuring_child(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)"),
                       tmp_path, "check", 120.0, _table)
    assert status == 1
    data = json.loads((tmp_path / "check.json").read_text())
    assert data["parts"]["build"]["status"] == "cut short"
    assert data["errors"][-1] == {"part": "build", "error": "ProcessDied",
                                  "message": "the measuring process ended with signal SIGKILL"}


def test_a_measuring_process_that_finishes_keeps_its_own_status(tmp_path: Path) -> None:
    code = _measuring_child(tmp_path, "pass")
    code[-1] += "\nreport.write(final=True)\nsys.exit(0)\n"
    assert supervise(code, tmp_path, "check", 120.0, _table) == 0
    data = json.loads((tmp_path / "check.json").read_text())
    assert data["status"] == "pass" and data["errors"] == []


# --- the measures ---------------------------------------------------------------------------

def _record(steps: list[list[list[float]]]) -> dict[str, torch.Tensor]:
    """What a StepRecorder keeps of these steps' scores (rows x vocabulary each)."""
    recorder = StepRecorder(len(steps[0]))
    for scores in steps:
        recorder(torch.zeros(1), torch.tensor(scores))
    return recorder.result()


def test_the_recorder_takes_greedy_tokens_forces_the_given_ones_and_counts_non_finite() -> None:
    forced = torch.tensor([[2, 0]])
    recorder = StepRecorder(1, masked=[3], forced=forced)
    first = recorder(torch.zeros(1), torch.tensor([[0.1, 0.9, 0.5, float("-inf")],
                                                   [9.0, 0.0, 0.0, 0.0]]))
    assert first[0].argmax() == 2 and first[1].tolist() == [9.0, 0.0, 0.0, 0.0]  # padding row
    recorder(torch.zeros(1), torch.tensor([[float("nan"), 1.0, 0.0, float("-inf")]]))
    result = recorder.result()
    # Before forcing, its own prediction, as generate's argmax takes it (a NaN wins).
    assert result["chosen"].tolist() == [[1, 0]]
    assert result["non_finite"].tolist() == [[0, 1]]  # the masked EOS id is not counted
    assert result["top_values"][0, 0].tolist() == pytest.approx([0.9, 0.5])


def test_teacher_forced_agreement_counts_positions_and_flips_with_their_gaps() -> None:
    eager = _record([[[0.0, 1.0, 0.9]], [[3.0, 0.0, 0.0]], [[0.0, 0.0, 2.0]]])
    static = _record([[[0.0, 0.95, 1.0]], [[3.1, 0.0, 0.0]], [[0.0, 0.0, 2.0]]])
    control = _record([[[1.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]], [[0.0, 0.0, 2.0]]])
    summary = teacher_forced_agreement(eager, static, control)
    assert summary["fraction"] == pytest.approx(2 / 3)
    assert (summary["first_step_fraction"], summary["decode_steps_fraction"]) == (0.0, 1.0)
    assert summary["disagreements"] == 1
    assert summary["largest_gap_flipped"] == pytest.approx(0.1)  # a near-tie flipped
    assert summary["max_top_logit_diff"] == pytest.approx(0.1)
    assert summary["control_fraction"] == pytest.approx(1 / 3)
    assert summary["non_finite_logits"] == 0


@pytest.mark.parametrize(("static", "eager", "fraction"), [
    ([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]], 1.0),
    ([[1, 2, 3], [4, 5, 6]], [[1, 9, 9], [4, 5, 6]], 4 / 6),  # a flip, then divergence
])
def test_free_running_agreement_is_a_share_of_positions(static: list[list[int]],
                                                        eager: list[list[int]],
                                                        fraction: float) -> None:
    assert free_running_agreement(static, eager) == pytest.approx(fraction)


def test_a_prompt_of_exactly_so_many_tokens(tiny_models: Path) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_models / "gemma-7b")

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    for tokens in (2, 64, 257):
        assert count(prompt_of_tokens(count, tokens)) == tokens
    with pytest.raises(ValueError, match="exactly 1 tokens"):
        prompt_of_tokens(count, 1)  # BOS alone: no word fits
