"""The files a run writes, against the documented contract (SPEC section 2).

The test helpers build fake runs from the same ``sincere/schemas.py`` lists the code writes
with, so a renamed column would go unnoticed there. Here a real run (tests/conftest.py's
finished_grid: run_experiments.py, server and generator as subprocesses) and a simulated one
are read back and checked against ``sincere/schemas.py``, against the tables of
docs/results.md, and against ../shared/SPEC.md where that is at hand, each list parsed from the
text; what each column means is checked row by row in the test's own words.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

import simulate_experiments
from sincere import schemas
from sincere.runs.identity import params_hash, run_identity

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = REPO_ROOT.parent / "shared" / "SPEC.md"
RESULTS_DOC = REPO_ROOT / "docs" / "results.md"
NEW_TOKENS = 4  # tests/server_support.py's runner_argv
ISSUED = 12  # 3 requests/s for 4 s

CSV_FILES = {"requests.csv": schemas.REQUEST_COLUMNS, "batches.csv": schemas.BATCH_COLUMNS,
             "client.csv": schemas.CLIENT_COLUMNS, "monitor.csv": schemas.MONITOR_COLUMNS,
             "schedule.csv": schemas.SCHEDULE_COLUMNS}
# SPEC section 2 names no columns for schedule.csv (section 5: "the schedule is saved with the
# run"); docs/results.md does, in its SPEC notes.
NOT_IN_SPEC = {"schedule.csv"}


def listed_columns(text: str, name: str) -> list[str]:
    """The first backquoted, comma-separated list after ``name`` in a Markdown text."""
    start = text.index(name) + len(name)
    found = re.compile(r"`([^`]*,[^`]*)`").search(text, start)
    assert found is not None, name
    return [column.strip() for column in found.group(1).split(",")]


def read(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / name, keep_default_na=False, na_values=[""])


def header(run_dir: Path, name: str) -> list[str]:
    return (run_dir / name).read_text().splitlines()[0].split(",")


@pytest.mark.parametrize("name", sorted(CSV_FILES))
def test_the_documented_columns_are_the_schema_modules(name: str) -> None:
    assert listed_columns(RESULTS_DOC.read_text(), f"`{name}`") == CSV_FILES[name]


@pytest.mark.skipif(not SPEC.is_file(), reason="../shared/SPEC.md is not here")
def test_the_specs_tables_are_the_schema_modules() -> None:
    spec = SPEC.read_text()
    for name, columns in CSV_FILES.items():
        if name not in NOT_IN_SPEC:
            assert listed_columns(spec, f"`{name}`") == columns, name
    assert listed_columns(spec, "model_loading_times_<device>_<cc|noncc>_<stamp>.csv`") == \
        schemas.LOADING_PROFILE_COLUMNS
    assert listed_columns(spec, "batch_profiling_<device>_<cc|noncc>_<stamp>.csv`") == \
        schemas.BATCH_PROFILE_COLUMNS
    statuses = re.search(r"`status` is (.*?)(?:;|\.)", spec, re.S).group(1)
    assert re.findall(r"`(\w+)`", statuses) == list(schemas.REQUEST_STATUSES)
    reasons = re.search(r"`reason` says why the batch left: (.*?)\.", spec, re.S).group(1)
    assert re.findall(r"`(\w+)`", reasons) == list(schemas.BATCH_REASONS)


def test_a_real_run_writes_every_file_with_the_documented_header(finished_grid) -> None:
    run_dir = finished_grid.run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [*CSV_FILES, "run.json", "server.log", "generator.log"])
    for name, columns in CSV_FILES.items():
        assert header(run_dir, name) == columns, name


def test_a_simulated_run_writes_the_same_columns(tmp_path: Path) -> None:
    assert simulate_experiments.main([
        "--results-dir", str(tmp_path), "--strategies", "Immediate", "--patterns", "gamma",
        "--means", "4", "--slas", "40", "--repeats", "1", "--duration-s", "30",
        "--workers", "1"]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "batches.csv", "requests.csv", "run.json", "schedule.csv"]
    for name in ("requests.csv", "batches.csv", "schedule.csv"):
        assert header(run_dir, name) == CSV_FILES[name], name


def test_requests_csv_one_row_per_request_its_times_in_order(finished_grid) -> None:
    requests = read(finished_grid.run_dir, "requests.csv")
    assert sorted(requests["request_id"]) == [f"r{i:06d}" for i in range(ISSUED)]
    assert set(requests["status"]) <= set(schemas.REQUEST_STATUSES)
    assert set(requests["sla_met"].astype(str)) <= {"True", "False"}
    ok = requests[requests["status"] == "ok"]
    assert len(ok) == ISSUED  # a light load: every request served
    # arrival <= dispatch <= start <= end, and each wait is the gap its name says.
    assert (ok["arrival_s"] >= 0).all()
    assert (ok["dispatch_s"] >= ok["arrival_s"]).all() and (ok["start_s"] >= ok["dispatch_s"]).all()
    assert (ok["end_s"] >= ok["start_s"]).all()
    for waited, later, earlier in (("queue_wait_s", "dispatch_s", "arrival_s"),
                                   ("swap_wait_s", "start_s", "dispatch_s"),
                                   ("processing_s", "end_s", "start_s"),
                                   ("latency_s", "end_s", "arrival_s")):
        assert (ok[waited] - (ok[later] - ok[earlier])).abs().max() < 2e-6, waited
    assert (ok["sla_s"] == 5.0).all()
    assert (ok["sla_met"].astype(str) == (ok["latency_s"] <= 5.0).astype(str)).all()
    assert (ok["output_tokens"] == NEW_TOKENS).all() and (ok["prompt_tokens"] > 0).all()


def test_batches_csv_holds_each_batch_its_requests_ran_in(finished_grid) -> None:
    run_dir = finished_grid.run_dir
    requests = read(run_dir, "requests.csv")
    batches = read(run_dir, "batches.csv").set_index("batch_id")
    assert set(batches["reason"]) <= set(schemas.BATCH_REASONS)
    assert sorted(batches.index) == sorted(set(requests["batch_id"]))
    for batch_id, members in requests.groupby("batch_id"):
        batch = batches.loc[batch_id]
        assert batch.batch_size == len(members) == members["batch_size"].iloc[0]
        assert (members["model"] == batch.model).all()
        for column in ("dispatch_s", "start_s", "end_s"):
            assert (members[column] - batch[column]).abs().max() < 2e-6, column
        assert batch.output_tokens == members["output_tokens"].sum()
    assert ((batches["swap_s"] - (batches["start_s"] - batches["dispatch_s"])).abs() < 2e-6).all()
    assert ((batches["processing_s"] - (batches["end_s"] - batches["start_s"])).abs()
            < 2e-6).all()
    # swap_from: the model resident before a batch of another model; empty when none was, or
    # when the batch's model was already resident.
    ordered = batches.sort_values("dispatch_s")
    previous = [None, *ordered["model"].iloc[:-1]]
    for (_, batch), before in zip(ordered.iterrows(), previous, strict=True):
        expected = before if before not in (None, batch.model) else None
        assert (None if pd.isna(batch.swap_from) else batch.swap_from) == expected


def test_client_and_schedule_csv_are_the_generators_side(finished_grid) -> None:
    run_dir = finished_grid.run_dir
    client = read(run_dir, "client.csv").set_index("request_id")
    schedule = read(run_dir, "schedule.csv").set_index("request_id")
    requests = read(run_dir, "requests.csv").set_index("request_id")
    assert sorted(client.index) == sorted(schedule.index) == sorted(requests.index)
    # A constant 3 requests/s: the k-th is scheduled at k/3 s.
    assert schedule.loc[sorted(schedule.index), "scheduled_s"].tolist() == pytest.approx(
        [k / 3 for k in range(ISSUED)])
    assert (client["scheduled_s"] - schedule.loc[client.index, "scheduled_s"]).abs().max() < 1e-6
    assert (client["model"] == schedule.loc[client.index, "model"]).all()
    assert (client["model"] == requests.loc[client.index, "model"]).all()
    assert (client["sent_s"] >= 0).all() and (client["received_s"] >= client["sent_s"]).all()
    assert ((client["client_latency_s"] - (client["received_s"] - client["sent_s"])).abs()
            < 2e-6).all()
    assert (client["http_status"] == 200).all() and client["error"].isna().all()
    # The new tokens the server reported, as it recorded them.
    assert (client["output_tokens"] == requests.loc[client.index, "output_tokens"]).all()


def test_monitor_csv_samples_the_run_in_time_order(finished_grid) -> None:
    monitor = read(finished_grid.run_dir, "monitor.csv")
    assert len(monitor) >= 2
    assert monitor["t_s"].is_monotonic_increasing and monitor["t_s"].is_unique
    assert monitor["epoch_s"].is_monotonic_increasing
    assert monitor["cpu_pct"].between(0, 100).all() and (monitor["ram_used_gib"] > 0).all()
    if not torch.cuda.is_available():  # GPU columns empty without a GPU
        assert monitor[schemas.MONITOR_COLUMNS[4:]].isna().all().all()


def strict_json(path: Path) -> dict:
    """run.json, refusing NaN and Infinity (not JSON)."""
    def refuse(constant: str) -> float:
        raise ValueError(f"{path} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_run_json_holds_what_the_spec_lists(finished_grid) -> None:
    run = strict_json(finished_grid.run_dir / "run.json")
    params = run["params"]
    # The run's parameters (SPEC section 2), with this grid point's values.
    assert {k: params[k] for k in ("strategy", "pattern", "mean_rps", "sla_s", "duration_s",
                                   "seed", "repeat", "max_new_tokens", "engine")} == {
        "strategy": "Immediate", "pattern": "constant", "mean_rps": 3.0, "sla_s": 5.0,
        "duration_s": 4.0, "seed": 0, "repeat": 0, "max_new_tokens": NEW_TOKENS,
        "engine": "hf"}
    assert params["models"] == ["gemma-7b", "granite-7b", "llama3-8b"]
    assert math.isclose(sum(params["model_mix"].values()), 1.0)
    assert Path(params["profiles"]["loading_file"]).is_file()
    assert Path(params["profiles"]["batch_file"]).is_file()
    # Its environment, CC mode included with the raw fields it was decided from.
    environment = run["environment"]
    for key in ("gpu_name", "driver_version", "cuda_version", "torch", "transformers",
                "cc_mode", "cc_source", "cc_feature", "cpu_tee"):
        assert key in environment, key
    assert environment["cc_mode"] in ("on", "off", "unknown")
    assert environment["torch"] == torch.__version__
    # Its accounting: issued = ok + rejected + failed + unserved + shed.
    accounting = run["accounting"]
    assert accounting["issued"] == ISSUED == sum(
        accounting[k] for k in ("completed", "rejected", "failed", "unserved", "shed"))
    # Its summary metrics (SPEC section 6), over the 4-s traffic window.
    summary = run["summary"]
    assert run["traffic_window_s"] == summary["traffic_window_s"] == 4.0
    for key in ("latency_mean_s", "latency_p50_s", "latency_p90_s", "latency_p99_s",
                "queue_wait_mean_s", "swap_wait_mean_s", "processing_mean_s", "sla_attainment",
                "throughput_rps", "output_tokens_per_s", "goodput_rps", "gpu_util_mean_pct",
                "gpu_busy_fraction", "swap_fraction", "drain_s", "completed_in_drain",
                "swaps", "swap_time_s", "sla_attainment_bound"):
        assert key in summary, key
    requests = read(finished_grid.run_dir, "requests.csv")
    assert summary["sla_attainment"] == pytest.approx(
        (requests["sla_met"].astype(str) == "True").sum() / ISSUED)
    # And the hash of every parameter that changes what it measures.
    assert run["params_hash"] == params_hash(run_identity(params))
