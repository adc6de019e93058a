"""Reading run directories: a missing or malformed file is named, and the other runs go on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sincere.results.summary import summarise_runs
from sincere.runs.rundirs import find_run_dirs
from tests.helpers_rundirs import SyntheticRun


def two_runs(root: Path) -> tuple[Path, Path]:
    """A good run and the run a test will break, both with three completed requests."""
    paths = []
    for run_id in ("good__rep0", "broken__rep0"):
        run = SyntheticRun(run_id=run_id, engine="hf", gpu_util_pct=[50.0, 50.0])
        run.add_batch("llama3-8b", [0.0, 1.0, 2.0], start_s=3.0, processing_s=2.0, swap_s=1.0)
        paths.append(run.write(root))
    return paths[0], paths[1]


def overwrite(name: str, text: str) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).write_text(text)


def remove(name: str) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).unlink()


SKIPPING = [
    ("requests.csv", remove("requests.csv"), "missing"),
    ("requests.csv", overwrite("requests.csv", ""), "malformed"),
    ("requests.csv", overwrite("requests.csv", "request_id,model,arrival_s,end_s,sla_met,"
                               "status\nr1,llama3-8b,soon,3.0,True,ok\n"), "malformed"),
    ("requests.csv", overwrite("requests.csv", "request_id,model,arrival_s,end_s,sla_met\n"
                               "r1,llama3-8b,0.0,3.0,True\n"), "missing column(s) status"),
    ("run.json", overwrite("run.json", '{"params": {"strategy": "Best'), "not valid JSON"),
    ("run.json", overwrite("run.json", '{"params": ["BestBatch"]}'), "'params' is not an object"),
    ("run.json", remove("run.json"), None),  # no run.json: not a run directory at all
]


@pytest.mark.parametrize(("file_name", "damage", "message"), SKIPPING)
def test_a_run_without_usable_core_files_is_skipped_with_the_file_named(
        tmp_path: Path, file_name: str, damage: Callable[[Path], None],
        message: str | None) -> None:
    good, broken = two_runs(tmp_path)
    damage(broken)
    records, warnings = summarise_runs([tmp_path], workers=1)
    assert [r.path for r in records] == [good.resolve()]
    assert records[0].row["requests_ok"] == 3
    if message is not None:
        named = [w for w in warnings if str(broken.resolve() / file_name) in w]
        assert len(named) == 1
        assert message in named[0] and "run skipped" in named[0]


KEEPING = [
    ("batches.csv", remove("batches.csv"), "swaps", "batch metrics left empty"),
    ("batches.csv", overwrite("batches.csv", "model,start_s\nx,1\n"), "gpu_busy_fraction",
     "missing column(s)"),
    ("monitor.csv", overwrite("monitor.csv", "t_s,gpu_util_pct\n0.0,busy\n"),
     "gpu_util_mean_pct", "GPU utilisation left empty"),
]


@pytest.mark.parametrize(("file_name", "damage", "emptied", "message"), KEEPING)
def test_a_run_with_a_bad_optional_file_is_kept_without_those_metrics(
        tmp_path: Path, file_name: str, damage: Callable[[Path], None], emptied: str,
        message: str) -> None:
    good, broken = two_runs(tmp_path)
    damage(broken)
    records, warnings = summarise_runs([tmp_path], workers=1)
    rows = {r.path: r.row for r in records}
    assert rows[broken.resolve()][emptied] is None
    assert rows[good.resolve()][emptied] is not None
    assert rows[broken.resolve()]["sla_attainment"] == 1.0  # the rest is still computed
    named = [w for w in warnings if str(broken.resolve() / file_name) in w]
    assert len(named) == 1 and message in named[0]


def test_a_failed_run_is_processed_as_far_as_its_files_go(tmp_path: Path) -> None:
    run = SyntheticRun(status="failed", run_time_s=None, duration_s=float("nan"))
    run.add_batch("llama3-8b", [0.0, 1.0], start_s=2.0, processing_s=8.0)  # ends at 10 s
    run_dir = run.write(tmp_path)
    records, warnings = summarise_runs([tmp_path], workers=1)
    assert records[0].row["status"] == "failed"
    assert records[0].row["run_time_s"] == pytest.approx(10.0)  # the last event
    # No duration and no traffic_window_s: the window ends at the last arrival (1 s), so the
    # batch that ended at 10 s completed in the drain.
    assert records[0].row["traffic_window_s"] == pytest.approx(1.0)
    assert records[0].row["throughput_rps"] == 0.0
    assert records[0].row["completed_in_drain"] == 2
    assert any(str(run_dir.resolve() / "run.json") in w and "no traffic window" in w
               for w in warnings)


def test_accounting_that_does_not_add_up_is_reported(tmp_path: Path) -> None:
    run = SyntheticRun(issued=9)  # 9 issued, but 2 completed + 0 rejected/failed/unserved
    run.add_completed([1.0, 2.0])
    run.write(tmp_path)
    records, warnings = summarise_runs([tmp_path], workers=1)
    assert records[0].row["requests_lost"] == 7
    assert any("9 != completed + rejected + failed + unserved + shed = 2" in w for w in warnings)


def test_run_directories_are_found_two_levels_down_once_each_not_hidden(tmp_path: Path) -> None:
    top = SyntheticRun(run_id="top").write(tmp_path)
    deep = SyntheticRun(run_id="deep").write(tmp_path / "copied_from_vm")
    SyntheticRun(run_id="too_deep").write(tmp_path / "d" / "e")
    SyntheticRun(run_id="staged").write(tmp_path / ".partial")  # a run still being written
    found = find_run_dirs([tmp_path, tmp_path / "copied_from_vm", deep])
    assert sorted(found) == sorted([top.resolve(), deep.resolve()])


def test_a_folder_without_runs_is_named(tmp_path: Path) -> None:
    SyntheticRun().write(tmp_path / "full")
    (tmp_path / "empty").mkdir()
    records, warnings = summarise_runs([tmp_path / "full", tmp_path / "empty"], workers=1)
    assert len(records) == 1
    assert warnings == [f"{tmp_path / 'empty'}: no run directories (no run.json found)"]
