"""Run identity: a rerun reuses a finished run only when every parameter that matters agrees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import simulate_experiments
from sincere.grid.points import PlannedRun, RunConflict, runs_to_do
from sincere.runs.identity import ENGINE_KEYS, params_hash, run_identity

GRID = ["--strategies", "BestBatch+Timer", "--patterns", "gamma", "--means", "4",
        "--slas", "40", "--repeats", "1", "--duration-s", "60", "--workers", "1"]


def simulate(results: Path, *flags: str) -> int:
    return simulate_experiments.main(["--results-dir", str(results), *GRID, *flags])


def test_a_rerun_skips_only_a_run_made_with_the_same_parameters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "sim"
    assert simulate(results) == 0
    run_dir = results / "bestbatch-timer__gamma__rate4__sla40__rep0"
    first = json.loads((run_dir / "run.json").read_text())
    assert first["params_hash"] == params_hash(run_identity(first["params"]))
    capsys.readouterr()

    assert simulate(results) == 0
    assert "1 already complete with these parameters" in capsys.readouterr().out

    # Another seed, token count and profile: never reported complete, the command stops and
    # says what differs and what to do.
    assert simulate(results, "--seed", "7", "--max-new-tokens", "128",
                    "--profiles", "h100-orig_cc") == 2
    message = capsys.readouterr().err
    for words in ("seed: 0 -> 7", "max_new_tokens: 50 -> 128", "profiles:", "--results-dir",
                  "--overwrite true"):
        assert words in message
    assert json.loads((run_dir / "run.json").read_text()) == first

    assert simulate(results, "--seed", "7", "--overwrite", "true") == 0
    redone = json.loads((run_dir / "run.json").read_text())
    assert redone["params"]["seed"] == 7 and redone["params_hash"] != first["params_hash"]


def test_the_same_run_described_twice_has_one_identity(tmp_path: Path) -> None:
    trace = Path(__file__).parent / "data" / "azure_conv_excerpt.csv"
    base = {"engine": "sim", "strategy": "BestBatch", "pattern": "trace", "mean_rps": 4,
            "model_mix": {"a": 1, "b": 3}, "pattern_params": {"trace_path": str(trace)},
            "profiles": {"digest": "x"}}
    same = {**base, "mean_rps": 4.0, "model_mix": {"b": 0.75, "a": 0.25},
            "pattern_params": {"trace_path": os.path.relpath(trace), "trace_rate": None,
                               "requests": 99}}  # a derived count is not part of it
    assert params_hash(run_identity(base)) == params_hash(run_identity(same))
    copy = tmp_path / "copy.csv"
    copy.write_bytes(trace.read_bytes() + b"\n")  # another trace's contents
    other = {**base, "pattern_params": {"trace_path": str(copy)}}
    assert params_hash(run_identity(base)) != params_hash(run_identity(other))


def test_a_failed_run_is_redone_whatever_its_parameters(tmp_path: Path) -> None:
    identity = run_identity({"engine": "sim", "seed": 1})
    failed = tmp_path / "run"
    failed.mkdir()
    (failed / "run.json").write_text(json.dumps({"status": "failed", "params": {"seed": 0}}))
    planned = [PlannedRun("run", failed, identity)]
    assert runs_to_do(planned) == planned
    with pytest.raises(RunConflict, match="seed: 0 -> 1"):
        runs_to_do(planned, retry_failed=False)


def test_replays_add_their_spread_and_leave_the_written_run_as_it_was(tmp_path: Path) -> None:
    assert simulate(tmp_path / "one") == 0
    assert simulate(tmp_path / "many", "--replays", "12") == 0
    run_id = "bestbatch-timer__gamma__rate4__sla40__rep0"
    one = json.loads((tmp_path / "one" / run_id / "run.json").read_text())
    many = json.loads((tmp_path / "many" / run_id / "run.json").read_text())
    # Replay 0 is the run written, drawn as without replays: the same rows and summary.
    for name in ("requests.csv", "batches.csv"):
        assert (tmp_path / "one" / run_id / name).read_bytes() == \
            (tmp_path / "many" / run_id / name).read_bytes()
    assert one["summary"] == many["summary"]
    assert one["replays"]["runs"] == 1 and many["replays"]["runs"] == 12
    for metric, spread in many["replays"]["metrics"].items():
        assert spread["low"] <= spread["mean"] <= spread["high"], metric
    assert many["replays"]["metrics"]["latency_mean_s"]["high"] > \
        many["replays"]["metrics"]["latency_mean_s"]["low"]  # other jitter seeds, other runs
    # A run's identity counts its replays (a rerun with other replays is another run), but a
    # simulated run still pairs with a measured one whatever its replays.
    assert many["params"]["replays"] == 12 and many["params_hash"] != one["params_hash"]
    assert "replays" in ENGINE_KEYS
    assert simulate(tmp_path / "none", "--replays", "0") == 2
