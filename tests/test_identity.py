"""Run identity: a rerun reuses a finished run only when every parameter that matters agrees."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import simulate_experiments
from sincere.grid.points import PlannedRun, RunConflict, runs_to_do
from sincere.results.summary import identity_columns
from sincere.runs.identity import params_hash, run_identity

GRID = ["--strategies", "BestBatch+Timer", "--patterns", "gamma", "--means", "4",
        "--slas", "40", "--repeats", "1", "--duration-s", "60", "--workers", "1"]
RUN_ID = "bestbatch-timer__gamma__rate4__sla40__rep0"


def simulate(results: Path, *flags: str) -> int:
    return simulate_experiments.main(["--results-dir", str(results), *GRID, *flags])


@pytest.fixture(scope="module")
def simulated_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid above simulated once, with the defaults; tests that change it take a copy."""
    results = tmp_path_factory.mktemp("identity") / "sim"
    assert simulate(results) == 0
    return results


def copy_of(grid: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(grid, tmp_path / "sim"))


def test_a_rerun_skips_only_a_run_made_with_the_same_parameters(
        simulated_grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = copy_of(simulated_grid, tmp_path)
    run_dir = results / RUN_ID
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


@pytest.mark.parametrize(("flags", "differs"), [
    (["--std-factor", "2"], "std_factor: 1.0 -> 2.0"),  # load time = mean + 2 std
    (["--drain-timeout-s", "30"], "drain_timeout_s: 600.0 -> 30.0"),
    (["--max-queue", "10"], "max_queue: 3000 -> 10"),
    (["--margin-s", "2"], 'strategy_params: {"margin_s": 1.0, "shed_late": false} -> '
                          '{"margin_s": 2.0, "shed_late": false}'),
    (["--shed-late", "true"], '"shed_late": true}'),
    (["--jitter", "false"], "jitter: true -> false"),
    (["--replays", "3"], "replays: 1 -> 3"),
    (["--gamma-shape", "4"], '"gamma_shape": 4.0'),
    (["--duration-s", "30"], "duration_s: 60.0 -> 30.0"),
    (["--model-mix", "granite-7b=0.5", "gemma-7b=0.2", "llama3-8b=0.3"], "model_mix:"),
], ids=lambda value: value[0] if isinstance(value, list) else "")
def test_every_parameter_that_changes_what_a_run_measures_is_its_identity(
        simulated_grid: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
        differs: str) -> None:
    """The finished run is not reused with any of them changed: the rerun stops, naming it,
    and leaves the run as it was (nothing is simulated, so the shared grid is not changed)."""
    before = (simulated_grid / RUN_ID / "run.json").read_bytes()
    capsys.readouterr()
    assert simulate(simulated_grid, *flags) == 2
    assert differs in capsys.readouterr().err
    assert (simulated_grid / RUN_ID / "run.json").read_bytes() == before


@pytest.mark.parametrize("flags", [
    ["--workers", "2"],  # how many processes simulate it
    ["--max-queue-delay-s", "5"],  # Dynamic+Delay's option: BestBatch+Timer has none
    ["--rate-window-s", "10"],  # SelectBatch+Timer's option
    ["--model-mix", "granite-7b=1", "gemma-7b=3", "llama3-8b=6"],  # the same shares as weights
], ids=lambda flags: flags[0])
def test_what_does_not_change_the_measurement_is_not_its_identity(
        simulated_grid: Path, capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    before = (simulated_grid / RUN_ID / "run.json").read_bytes()
    capsys.readouterr()
    assert simulate(simulated_grid, *flags) == 0
    assert "1 already complete with these parameters" in capsys.readouterr().out
    assert (simulated_grid / RUN_ID / "run.json").read_bytes() == before


@pytest.mark.parametrize(("key", "value"), [
    ("decode", "static"), ("host_cache", False), ("engine_process", False), ("pin_cores", False),
])
def test_a_measured_runs_engine_settings_are_its_identity(key: str, value: object) -> None:
    """A measured run's engine side (how it decodes, where swaps load from, whether the engine
    has a process and cores of its own) changes what it measures; a simulated run pairs with
    it whatever they are."""
    measured = {"engine": "hf", "strategy": "Immediate", "seed": 0, "decode": "eager",
                "host_cache": True, "engine_process": True, "pin_cores": True}
    changed = {**measured, key: value}
    assert params_hash(run_identity(changed)) != params_hash(run_identity(measured))
    assert identity_columns({"params": changed})["sim_pair_id"] == \
        identity_columns({"params": measured})["sim_pair_id"]


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


def test_replays_add_their_spread_and_leave_the_written_run_as_it_was(
        simulated_grid: Path, tmp_path: Path) -> None:
    assert simulate(tmp_path / "many", "--replays", "12") == 0
    run_id = RUN_ID
    one = json.loads((simulated_grid / run_id / "run.json").read_text())
    many = json.loads((tmp_path / "many" / run_id / "run.json").read_text())
    # Replay 0 is the run written, drawn as without replays: the same rows and summary.
    for name in ("requests.csv", "batches.csv"):
        assert (simulated_grid / run_id / name).read_bytes() == \
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
    assert identity_columns(many)["sim_pair_id"] == identity_columns(one)["sim_pair_id"]
    assert simulate(tmp_path / "none", "--replays", "0") == 2
