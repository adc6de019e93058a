"""The grid's plan and progress (sincere/grid/plan.py): expected drain, run count and duration
of a known grid, measured start-up, the ETA on a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sincere.grid.plan import (
    Capacity,
    GridPlan,
    Progress,
    RunCost,
    capacity,
    expected_drain_s,
    format_duration,
    format_hours,
    grid_seconds,
    measured_startup,
)
from sincere.grid.points import expand_grid, grid_runs
from tests.profile_fixtures import two_models

ORIGINAL_STRATEGIES = ["BestBatch", "BestBatch+Timer", "SelectBatch+Timer",
                       "BestBatch+PartialBatch+Timer", "MaxGoodput"]


def test_capacity_of_a_profile_is_its_best_batches_rate_for_the_mix() -> None:
    # Both models: best batch 4 in 3 s, 0.75 s a request -> 4/3 requests/s whatever the mix.
    served = capacity(two_models(), {"a": 0.25, "b": 0.75}, 50)
    assert served.rps == pytest.approx(4 / 3)
    assert served.batch_s == 3.0


@pytest.mark.parametrize(("mean_rps", "max_queue", "sheds", "timeout_s", "expected_s"), [
    (4.0, 0, False, 600.0, 2.0),       # within capacity: the last batch
    (12.0, 0, False, 600.0, 242.0),    # 2 req/s over for 1200 s: 2400 left, 240 s at 10 req/s
    (12.0, 1000, False, 600.0, 102.0),  # the queue limit refuses beyond 1000
    (12.0, 0, True, 600.0, 42.0),      # shedding keeps what can meet 40 s: 400 requests
    (12.0, 0, False, 100.0, 100.0),    # the drain timeout ends it
])
def test_expected_drain(mean_rps: float, max_queue: int, sheds: bool, timeout_s: float,
                        expected_s: float) -> None:
    served = Capacity(rps=10.0, batch_s=2.0)
    assert expected_drain_s(mean_rps, 40.0, 1200.0, served, timeout_s, max_queue,
                            sheds) == pytest.approx(expected_s)


def original_grid_plan(results: Path, cc_modes: list[str], lines: list[str],
                       served: Capacity | None) -> GridPlan:
    points = expand_grid(ORIGINAL_STRATEGIES, ["gamma", "bursty", "ramp"], [4, 8, 12],
                         [40, 60, 80], 2)
    return GridPlan(grid_runs(points, results, cc_modes), 1200.0, 600.0, 3000, served=served,
                    startup_guess_s=300.0, say=lines.append)


def test_the_original_grid_plan_counts_its_runs_and_hours(tmp_path: Path) -> None:
    lines: list[str] = []
    # An engine far above every rate: each run 1200 s + its last batch (5 s) + 300 s start-up.
    plan = original_grid_plan(tmp_path, [], lines, Capacity(rps=100.0, batch_s=5.0))
    assert len(plan.choose(None)) == 270
    plan.announce({"": 1.0}, lambda run: False, "headline")
    assert lines[0] == "headline"
    assert lines[1] == ("a run: 1200 s of traffic + 5 s of drain (expected: the profile serves "
                        "100.0 requests/s without swaps) + 300 s start-up and close (a guess, "
                        "until a run is measured)")
    # 270 x 1505 s = 112.9 h; at most 270 x (1200 + 600 + 300) s = 157.5 h.
    assert lines[2] == ("estimated 112.9 h (4.7 days) for the 270 runs to do, one at a time "
                        "(at most 157.5 h (6.6 days) if every run drained for 600 s)")


def test_both_cc_modes_share_their_own_slots(tmp_path: Path) -> None:
    lines: list[str] = []
    plan = original_grid_plan(tmp_path, ["on", "off"], lines, None)
    plan.choose(None)
    plan.announce({"on": 2.0, "off": 1.0}, lambda run: False, "headline")
    assert lines[1:3] == ["cc_on: 270 runs, 0 done, 270 to do",
                          "cc_off: 270 runs, 0 done, 270 to do"]
    # No profile: no drain expected. The CC-off side, on its one slot, takes the longest:
    # 270 x 1500 s = 112.5 h.
    assert "drain (not expected without a profile; at most 600 s)" in lines[3]
    assert lines[4].startswith("estimated 112.5 h (4.7 days) for the 540 runs to do, 3 at once")


def test_grid_seconds_spreads_each_modes_runs_over_its_slots() -> None:
    assert grid_seconds({"on": [100.0] * 4, "off": [100.0]}, {"on": 2.0, "off": 4.0}) == 200.0
    assert grid_seconds({"": [30.0, 50.0]}, {"": 8.0}) == 40.0  # two runs use two slots
    assert grid_seconds({}, {}) == 0.0


def write_run(run_dir: Path, **run: object) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(run))


def test_startup_is_measured_on_the_finished_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "a", status="complete", wall_time_s=1290.0, run_time_s=1210.0)
    write_run(tmp_path / "b", status="complete", wall_time_s=1300.0, run_time_s=1200.0)
    write_run(tmp_path / "c", status="complete", wall_time_s=1330.0, run_time_s=1210.0)
    write_run(tmp_path / "d", status="failed", wall_time_s=5.0, run_time_s=None)
    runs = [json.loads((tmp_path / n / "run.json").read_text()) for n in "abcd"]
    startup = measured_startup(runs)
    assert (startup.seconds, startup.measured_runs) == (100.0, 3)  # the median of 80, 100, 120
    assert startup.describe() == "100 s start-up and close (measured on 3 runs)"
    assert measured_startup(runs[3:]) is None


def test_a_plan_measures_startup_where_its_runs_are(tmp_path: Path) -> None:
    lines: list[str] = []
    plan = original_grid_plan(tmp_path, [], lines, Capacity(rps=100.0, batch_s=5.0))
    first = plan.runs[0]
    write_run(first.run_dir, status="complete", wall_time_s=1265.0, run_time_s=1205.0)
    plan.choose(None)
    plan.announce({"": 1.0}, lambda run: False, "headline")
    assert lines[1].endswith("+ 60 s start-up and close (measured on 1 run)")


def test_progress_counts_elapsed_and_left_on_a_fake_clock() -> None:
    now = [1000.0]
    progress = Progress({"a": 100.0, "b": 100.0, "c": 200.0}, clock=lambda: now[0])
    now[0] += 150.0
    # "a" took 150 s of its expected 100: the 300 s left are expected to take 450 s.
    assert progress.finish("a", 150.0) == "elapsed 2m30s, about 7m30s left"
    now[0] += 10.0
    # A failed run ends early: it counts as done but says nothing of the others' length.
    assert progress.finish("b", 10.0, complete=False) == "elapsed 2m40s, about 5m00s left"
    now[0] += 290.0
    assert progress.finish("c", 290.0) == "elapsed 7m30s, all runs done"


def test_progress_shares_what_is_left_over_its_slots() -> None:
    now = [0.0]
    progress = Progress({f"r{i}": 600.0 for i in range(5)}, slots=2.0, clock=lambda: now[0])
    now[0] = 600.0
    assert progress.left_s() == pytest.approx(1500.0)  # 5 x 600 s on 2 slots
    progress.finish("r0", 600.0)
    assert progress.left_s() == pytest.approx(1200.0)
    for label in ("r1", "r2", "r3"):
        progress.finish(label, 600.0)
    assert progress.left_s() == pytest.approx(600.0)  # the last run has one slot to itself


@pytest.mark.parametrize(("seconds", "text"), [
    (4.4, "4 s"), (59.0, "59 s"), (61.0, "1m01s"), (3599.0, "59m59s"), (3600.0, "1h00m"),
    (47 * 3600 + 59 * 60, "47h59m"), (50 * 3600, "2d02h"), (-3.0, "0 s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_run_cost_without_a_profile_counts_no_drain() -> None:
    assert RunCost(1200.0, None, 60.0).expected_s == 1260.0
    assert RunCost(1200.0, 30.0, 60.0).expected_s == 1290.0


@pytest.mark.parametrize(("seconds", "text"), [
    (406_350.0, "112.9 h (4.7 days)"), (18_720.0, "5.2 h"), (1_260.0, "21 min")])
def test_format_hours(seconds: float, text: str) -> None:
    assert format_hours(seconds) == text


def test_run_experiments_dry_run_plans_and_starts_nothing(tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import run_experiments

    # main() turns SIGTERM into KeyboardInterrupt for its grid: not for the rest of this session.
    monkeypatch.setattr(run_experiments.signal, "signal", lambda *_args: None)
    common = ["--dry-run", "--results-dir", str(tmp_path / "results"),
              "--models-dir", str(tmp_path / "models"), "--profiles", "h100-orig_noncc",
              "--strategies", "BestBatch", "MaxGoodput", "--patterns", "gamma",
              "--means", "4", "12", "--slas", "40", "--duration-s", "1200"]
    assert run_experiments.main(common) == 0
    out = capsys.readouterr().out
    assert "run_experiments: 4 runs (0 already done with these parameters)" in out
    # The shipped profile serves about 9 requests/s: 12 leaves a backlog, MaxGoodput sheds it.
    [run_line] = [line for line in out.splitlines() if "a run: 1200 s of traffic" in line]
    assert " s of drain (expected: the profile serves " in run_line
    assert "before the runs can start: missing: " in out and "models/granite-7b" in out
    assert out.rstrip().endswith("DRY_RUN: the plan only, nothing started")
    assert not (tmp_path / "results").exists()
    # On a local Ray instance (not started to plan): RUNS_PER_NODE runs at once.
    assert run_experiments.main([*common, "--ray-address", "local", "--runs-per-node", "2",
                                 "--run-gpus", "0"]) == 0
    assert "for the 4 runs to do, 2 at once" in capsys.readouterr().out
