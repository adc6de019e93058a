"""The profilers: the sweep and summary logic with fakes, and end to end on the tiny models
(profiling_models.py, the Flask app through its test client, profiling_batch_calls.py against a
real profiling server), down to the simulator's profile reader accepting what they write."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import torch

import profiling_batch_calls
import profiling_batch_flask
import profiling_models
from sincere.assets.architectures import HUB_IDS
from sincere.assets.workloads import read_workloads
from sincere.engine.engine import BatchResult, Engine
from sincere.profiles.files import device_slug
from sincere.profiles.profile_set import load_profiles
from sincere.profiles.profiling import (
    BATCH_COLUMNS,
    BEST_BATCH_COLUMNS,
    LOADING_COLUMNS,
    BatchFailed,
    best_batches,
    measure_batch,
    run_sweeps,
    sweep_model,
    sweep_sizes,
    time_loading,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
ALIASES = sorted(HUB_IDS)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def only(folder: Path, pattern: str) -> Path:
    matches = sorted(folder.glob(pattern))
    assert len(matches) == 1, matches
    return matches[0]


# --- the sweep, the summary and one batch, with fakes ---------------------------------------

def fake_profile(oom_from: int = 10**9, fail_at: int | None = None):
    """A profile function: batch b takes b/10 + 1 s; out-of-memory from ``oom_from`` on."""
    calls: list[tuple[int, int]] = []

    def profile(model: str, size: int, run: int) -> dict[str, Any]:
        calls.append((size, run))
        if size == fail_at:
            raise RuntimeError("HTTP 500 at batch 3: BatchFailed")
        seconds = size / 10 + 1
        return {"processing_time_s": seconds, "throughput_rps": size / seconds,
                "oom": size >= oom_from}
    return profile, calls


def test_sweep_stops_at_the_first_out_of_memory_and_keeps_that_row() -> None:
    profile, calls = fake_profile(oom_from=5)
    written: list[dict[str, Any]] = []
    outcome = sweep_model(profile, "m", [1, 2, 3, 5, 8], runs=2, max_new_tokens=50,
                          source="test", on_row=written.append, warmup=1, log=lambda _: None)
    assert outcome.stopped_by == "oom"
    assert [(r["batch_size"], r["run"], r["oom"]) for r in outcome.rows] == [
        (1, 1, False), (1, 2, False), (2, 1, False), (2, 2, False), (3, 1, False),
        (3, 2, False), (5, 1, True)]
    assert written == outcome.rows
    assert calls[0] == (1, 0)  # the unrecorded warm-up
    assert (8, 1) not in calls
    assert {r["max_new_tokens"] for r in outcome.rows} == {50}


def test_a_compiled_engine_is_warmed_at_each_size_before_it_is_timed() -> None:
    profile, calls = fake_profile()
    outcome = sweep_model(profile, "m", [1, 4], runs=2, max_new_tokens=50, source="t",
                          on_row=lambda _: None, warmup=0, warm_each_size=True,
                          log=lambda _: None)
    assert calls == [(1, 0), (1, 1), (1, 2), (4, 0), (4, 1), (4, 2)]  # run 0: not recorded
    assert [(r["batch_size"], r["run"]) for r in outcome.rows] == [(1, 1), (1, 2), (4, 1),
                                                                   (4, 2)]


def test_sweep_stops_starting_sizes_after_the_deadline() -> None:
    profile, _ = fake_profile()
    now = iter([0.0, 5.0, 11.0])  # read once before each size after the first
    outcome = sweep_model(profile, "m", [1, 2, 4, 8], runs=1, max_new_tokens=50, source="t",
                          on_row=lambda _: None, deadline=10.0, warmup=0,
                          clock=lambda: next(now), log=lambda _: None)
    assert outcome.stopped_by == "time_limit"
    assert [r["batch_size"] for r in outcome.rows] == [1, 2, 4]


def test_an_error_ends_one_sweep_with_its_rows_kept() -> None:
    profile, _ = fake_profile(fail_at=3)
    outcome = sweep_model(profile, "m", [1, 2, 3, 4], runs=1, max_new_tokens=50, source="t",
                          on_row=lambda _: None, warmup=0, log=lambda _: None)
    assert outcome.stopped_by == "error"
    assert "RuntimeError" in outcome.error
    assert [r["batch_size"] for r in outcome.rows] == [1, 2]


def test_run_sweeps_shares_the_time_limit_and_keeps_the_summary_when_interrupted(
        tmp_path: Path) -> None:
    now = [0.0]

    def profile(model: str, size: int, run: int) -> dict[str, Any]:
        if model == "c":
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third model
        now[0] += 10.0  # each batch takes 10 s on the fake clock
        return {"processing_time_s": 10.0, "throughput_rps": size / 10.0, "oom": False}

    batch_path, best_path = tmp_path / "batch.csv", tmp_path / "best.csv"
    with pytest.raises(KeyboardInterrupt):
        run_sweeps(profile, ["a", "b", "c"], [1, 2, 4, 8], runs=1, max_new_tokens=50,
                   source="t", batch_path=batch_path, best_path=best_path, time_limit_s=60.0,
                   warmup=0, clock=lambda: now[0], log=lambda _: None)
    _, rows = read_csv(batch_path)
    # 60 s for three models: "a" may use 20 s (two sizes), "b" half of the 40 s left.
    assert [(r["model"], r["batch_size"]) for r in rows] == [
        ("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    _, best = read_csv(best_path)
    assert [(b["model"], b["best_batch"]) for b in best] == [("a", "2"), ("b", "2")]


def test_run_sweeps_says_which_model_and_size_and_the_time_left(tmp_path: Path) -> None:
    now = [0.0]

    def profile(model: str, size: int, run: int) -> dict[str, Any]:
        now[0] += 600.0  # each batch takes 10 minutes on the fake clock
        return {"processing_time_s": 600.0, "throughput_rps": size / 600.0, "oom": False}

    lines: list[str] = []
    run_sweeps(profile, ["a", "b"], [1, 2], runs=1, max_new_tokens=50, source="t",
               batch_path=tmp_path / "batch.csv", best_path=tmp_path / "best.csv",
               time_limit_s=3600.0, warmup=0, clock=lambda: now[0], log=lines.append)
    assert lines[0] == "  a: sizes 1..2, no new size after 30 min (its share)"
    assert lines[1].startswith("  a batch     1 run 1: ")
    assert lines[1].endswith("  (50 min left of the time limit)")
    assert lines[2].endswith("  (40 min left of the time limit)")
    assert lines[4] == "  b: sizes 1..2, no new size after 40 min (its share)"
    assert lines[6].endswith("  (20 min left of the time limit)")

    lines.clear()  # under two minutes, in seconds
    run_sweeps(profile, ["a"], [1], runs=1, max_new_tokens=50, source="t",
               batch_path=tmp_path / "batch2.csv", best_path=tmp_path / "best2.csv",
               time_limit_s=700.0, warmup=0, clock=lambda: now[0], log=lines.append)
    assert lines[0] == "  a: sizes 1..1, no new size after 12 min (its share)"
    assert lines[1].endswith("  (100 s left of the time limit)")


@pytest.mark.parametrize(("max_batch", "expected"), [
    (0, [1, 2, 3, 5, 8]), (5, [1, 2, 3, 5]), (4, [1, 2, 3])])
def test_sweep_sizes(max_batch: int, expected: list[int]) -> None:
    assert sweep_sizes([8, 3, 1, 2, 5, 3, 0], max_batch) == expected


def test_best_batches_per_model_and_token_count() -> None:
    def row(model: str, size: int, rps: float, oom: Any = False, tokens: int = 50) -> dict:
        return {"model": model, "batch_size": size, "throughput_rps": rps, "oom": oom,
                "max_new_tokens": tokens}

    rows = [row("a", 1, 1.0), row("a", 4, 3.0), row("a", 4, 5.0), row("a", 8, 4.0),
            row("a", 16, 0.0, oom="True"),  # as read back from a CSV
            row("b", 2, 2.0), row("b", 4, 2.0),  # a tie goes to the smaller batch
            row("b", 2, 9.0, tokens=128)]
    summary = {(s["model"], s["max_new_tokens"]): s for s in best_batches(rows)}
    assert summary[("a", 50)] == {"model": "a", "best_batch": 4, "best_throughput_rps": 4.0,
                                  "largest_batch": 8, "oom_batch": 16, "max_new_tokens": 50}
    assert (summary[("b", 50)]["best_batch"], summary[("b", 50)]["oom_batch"]) == (2, None)
    assert summary[("b", 128)]["best_throughput_rps"] == 9.0


class StubEngine:
    """Returns a preset BatchResult, as sincere.engine.engine.Engine.generate would, taking its
    ``seconds`` on the stub's own clock (``clock``, for measure_batch)."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        self.now_s = 0.0

    def generate(self, prompts: list[str], max_new_tokens: int | None = None) -> BatchResult:
        self.now_s += self.result.seconds
        return self.result

    def clock(self) -> float:
        return self.now_s


class StubSampler:
    def __init__(self) -> None:
        self.t_s = 0.0

    def sample_once(self) -> dict[str, Any]:
        self.t_s += 1.0
        return {"t_s": self.t_s}

    def means(self, since_t_s: float | None = None,
              until_t_s: float | None = None) -> dict[str, float | None]:
        assert (since_t_s, until_t_s) == (1.0, 2.0)  # exactly the batch's window
        return {"gpu_util_pct": 40.0, "cpu_pct": 90.0, "gpu_power_w": None}


def batch(**fields: Any) -> BatchResult:
    values: dict[str, Any] = {"texts": ["", ""], "prompt_tokens": [10, 30],
                              "output_tokens": [5, 5], "seconds": 2.0}
    return BatchResult(**{**values, **fields})


def test_measure_batch_figures_and_monitor_means() -> None:
    engine = StubEngine(batch())
    figures = measure_batch(engine, ["p", "q"], 5, StubSampler(), clock=engine.clock)
    assert figures["throughput_rps"] == pytest.approx(1.0)
    assert figures["output_tokens_per_s"] == pytest.approx(5.0)
    assert figures["prompt_tokens_mean"] == pytest.approx(20.0)
    assert (figures["oom"], figures["retries"], figures["failed"]) == (False, 0, 0)
    assert (figures["gpu_util_mean_pct"], figures["cpu_mean_pct"]) == (40.0, 90.0)
    assert figures["gpu_power_mean_w"] is None


@pytest.mark.parametrize("result", [
    batch(retries=1),  # split, every prompt answered
    batch(retries=1, failed=[1], errors=["OutOfMemoryError"],
          output_tokens=[5, 0]),
])
def test_measure_batch_marks_out_of_memory(result: BatchResult) -> None:
    engine = StubEngine(result)
    figures = measure_batch(engine, ["p", "q"], 5, clock=engine.clock)
    assert figures["oom"] is True
    assert figures["throughput_rps"] == pytest.approx((2 - len(result.failed)) / 2.0)


def test_measure_batch_refuses_a_batch_that_failed_otherwise() -> None:
    result = batch(failed=[0, 1], errors=["ValueError", "ValueError"], output_tokens=[0, 0])
    with pytest.raises(BatchFailed, match="2 of 2 prompts failed: ValueError"):
        measure_batch(StubEngine(result), ["p", "q"], 5)


@pytest.mark.parametrize(("gpu_name", "slug"), [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), (None, "cpu"),
    ("NVIDIA GeForce RTX 4090", "rtx4090"), ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA", "gpu")])
def test_device_slug(gpu_name: str | None, slug: str) -> None:
    assert device_slug(gpu_name) == slug


# --- end to end on the tiny models ----------------------------------------------------------

@pytest.fixture(scope="module")
def loading_profiles(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding what profiling_models.py wrote for the tiny models (2 rounds)."""
    out = tmp_path_factory.mktemp("loading_profiles")
    cores = os.sched_getaffinity(0)
    # The host-cache engine runs in a process of its own, as the server's (ENGINE_PROCESS).
    status = profiling_models.main(["--models-dir", str(tiny_models), "--profiles-dir", str(out),
                                    "--iterations", "2", "--warmup", "0",
                                    "--cpu-threads", str(torch.get_num_threads())])  # unchanged
    assert status == 0
    assert os.sched_getaffinity(0) == cores  # the engine's process closed, its cores given back
    return out


class CallerSideEngine:
    """A loading engine whose calls take longer than it reports, as an engine in a process of
    its own does: the round trip is the caller's, and the server's swaps pay it."""

    def __init__(self, host_cache: bool, round_trip_s: float) -> None:
        self.host_cache, self.round_trip_s = host_cache, round_trip_s

    def load(self, alias: str) -> Any:
        time.sleep(self.round_trip_s)
        return SimpleNamespace(seconds=0.0, size_gb=0.5,
                               path="host_cache" if self.host_cache else "disk")

    def unload(self) -> float:
        time.sleep(self.round_trip_s)
        return 0.001

    def prefetch(self, alias: str) -> float:
        return 0.0

    def pinning(self, alias: str) -> None:
        return None

    def evict(self, alias: str) -> None:
        pass


def test_time_loading_times_loads_from_the_callers_side_and_unloads_as_the_engine_says() -> None:
    timings = time_loading(CallerSideEngine(False, 0.002), CallerSideEngine(True, 0.003), "m", 2,
                           warmup=1, log=lambda _line: None)
    assert len(timings.cache_s) == len(timings.cache_unload_s) == len(timings.disk_s) == 2
    # A load holds the call's wall time, round trip included, not the 0 s the engine reported.
    assert min(timings.cache_s) >= 0.003 and min(timings.disk_s) >= 0.002
    # An unload is the engine's own 1 ms: the server's swap makes one call for both, one trip.
    assert timings.cache_unload_s == timings.disk_unload_s == [0.001, 0.001]
    assert timings.size_gb == 0.5


def test_profiling_models_writes_one_row_per_model(loading_profiles: Path,
                                                   tiny_models: Path) -> None:
    header, rows = read_csv(only(loading_profiles, "model_loading_times_cpu_noncc_*.csv"))
    assert header == LOADING_COLUMNS
    assert [r["model"] for r in rows] == ALIASES
    manifest = {r["alias"]: r for r in read_csv(tiny_models / "manifest.csv")[1]}
    for row in rows:
        assert (row["device"], row["dtype"], row["iterations"]) == ("cpu", "float32", "2")
        assert row["load_path"] == "host_cache"  # the server's path is the load_mean_s one
        assert row["load_mean_s"] == row["cache_load_mean_s"]
        # The copy mode was timed on the first model; pinned memory needs CUDA.
        assert row["copy_mode"] in ("pageable", "chunked")
        assert row["load_path_reason"].startswith(f"{row['copy_mode']} fastest: pageable ")
        assert f"(median swap of {ALIASES[0]}, " in row["load_path_reason"]
        assert "pinned not timed (needs CUDA)" in row["load_path_reason"]
        assert (row["host_pin_how"], row["host_pinned_gb"]) == ("none", "0.0")
        assert float(row["size_gb"]) == pytest.approx(float(manifest[row["model"]]["size_gb"]),
                                                      abs=1e-3)
        for column in ("load_mean_s", "disk_load_mean_s", "unload_mean_s", "load_std_s"):
            assert float(row[column]) >= 0.0
        assert row["source"].startswith("measured: ")


def test_profiling_models_refuses_a_missing_model(tiny_models: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status = profiling_models.main(["--models-dir", str(tiny_models), "--models", "mistral-7b",
                                    "--profiles-dir", str(tmp_path)])
    assert status == 2
    assert "mistral-7b" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def app_prompts(workloads: Path) -> dict[str, str]:
    return read_workloads(workloads)


def profiling_client(tiny_models: Path, prompts: dict[str, str], clock: Any = time.perf_counter,
                     **engine_options: Any) -> Any:
    engine = Engine(tiny_models, max_new_tokens=4, **engine_options)
    app = profiling_batch_flask.create_app(engine, prompts, info={"device_name": "cpu"},
                                           clock=clock)
    return app.test_client()


def test_flask_app_runs_batches_and_reports_figures_only(tiny_models: Path,
                                                         app_prompts: dict[str, str]) -> None:
    # The batch is timed on a clock that moves 1.5 s between its two readings, before and
    # after the batch: 3 requests in 1.5 s are 2 requests/s, their 3 x 4 new tokens 8 a second.
    ticks = iter(1.5 * k for k in range(1000))
    client = profiling_client(tiny_models, app_prompts, clock=lambda: next(ticks))
    health = client.get("/health").get_json()
    assert (health["models"], health["resident"]) == (ALIASES, None)
    assert (health["prompts"], health["device_name"]) == (len(app_prompts), "cpu")

    first = client.post("/profile", json={"model_alias": "granite-7b", "batch_size": 3})
    assert first.status_code == 200
    figures = first.get_json()
    assert figures["load_s"] > 0.0  # the model was loaded for it, outside the batch's time
    assert (figures["batch_size"], figures["max_new_tokens"], figures["oom"]) == (3, 4, False)
    assert figures["processing_time_s"] == 1.5
    assert (figures["throughput_rps"], figures["output_tokens_per_s"]) == (2.0, 8.0)
    assert not [p for p in app_prompts.values() if p.splitlines()[0] in first.get_data(True)]

    drawn = [client.post("/profile", json={"model_alias": "granite-7b", "batch_size": 3,
                                           "seed": 5}).get_json() for _ in range(2)]
    assert drawn[0]["load_s"] is None  # already resident
    assert drawn[0]["prompt_tokens_mean"] == drawn[1]["prompt_tokens_mean"]  # same seed, prompts
    ids = sorted(app_prompts)[:2]
    chosen = client.post("/profile", json={"model_alias": "llama3-8b", "prompt_ids": ids,
                                           "max_new_tokens": 2}).get_json()
    assert (chosen["batch_size"], chosen["max_new_tokens"]) == (2, 2)
    assert client.get("/health").get_json()["resident"] == "llama3-8b"


@pytest.fixture(scope="module")
def refusing_client(tiny_models: Path, app_prompts: dict[str, str]) -> Any:
    """One profiling app for the requests it refuses (none of them runs a batch)."""
    return profiling_client(tiny_models, app_prompts)


@pytest.mark.parametrize(("body", "message"), [
    ({"model_alias": "mistral-7b", "batch_size": 1}, "model_alias must be one of"),
    ({"model_alias": "granite-7b", "batch_size": 0}, "batch_size must be an integer"),
    ({"model_alias": "granite-7b", "batch_size": True}, "batch_size must be an integer"),
    ({"model_alias": "granite-7b", "batch_size": 1, "temperature": 1}, "unknown fields"),
    ({"model_alias": "granite-7b", "prompt_ids": ["nope"]}, "unknown prompt ids"),
    ({"model_alias": "granite-7b", "batch_size": 2, "prompt_ids": ["00000"]}, "differs"),
    ([1, 2], "JSON object"),
])
def test_flask_app_refuses_bad_requests(refusing_client: Any, body: Any, message: str) -> None:
    response = refusing_client.post("/profile", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_flask_app_reports_out_of_memory(tiny_models: Path, app_prompts: dict[str, str]) -> None:
    client = profiling_client(tiny_models, app_prompts, oom_batch_limit=2)
    fits = client.post("/profile", json={"model_alias": "gemma-7b", "batch_size": 2}).get_json()
    split = client.post("/profile", json={"model_alias": "gemma-7b", "batch_size": 3}).get_json()
    assert (fits["oom"], fits["retries"]) == (False, 0)
    assert (split["oom"], split["retries"], split["failed"]) == (True, 1, 0)


def test_flask_app_turns_a_failed_batch_into_a_500_without_text(
        app_prompts: dict[str, str]) -> None:
    class FailingEngine:
        max_new_tokens = 4
        resident = "granite-7b"

        def available_models(self) -> list[str]:
            return ["granite-7b"]

        def generate(self, prompts: list[str], max_new_tokens: int | None = None) -> Any:
            raise ValueError(f"cannot handle {prompts[0]!r}")  # a library quoting its input

    client = profiling_batch_flask.create_app(FailingEngine(), app_prompts).test_client()
    response = client.post("/profile", json={"model_alias": "granite-7b", "batch_size": 1})
    assert (response.status_code, response.get_json()) == (500, {"error": "ValueError"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def profiling_server(tiny_models: Path, workloads: Path) -> Iterator[str]:
    """profiling_batch_flask.py in its own process on a free port, batches over 4 out of memory."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "profiling_batch_flask.py", "--port", str(port), "--models-dir",
         str(tiny_models), "--workloads-dir", str(workloads), "--oom-batch-limit", "4",
         "--max-new-tokens", "3", "--monitor-period-s", "0.1"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        profiling_batch_calls.wait_for_server(url, 60.0)
        yield url
        requests.post(f"{url}/shutdown", timeout=10)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "profiling server stopped" in output
        prompts = read_workloads(workloads).values()
        assert not [p for p in prompts if p.splitlines()[0] in output]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_batch_calls_against_a_running_server_feed_the_simulator(
        profiling_server: str, loading_profiles: Path, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(loading_profiles, profiles)
    status = profiling_batch_calls.main([
        "--url", profiling_server, "--batch-sizes", "1", "2", "3", "5", "8", "--runs", "2",
        "--max-new-tokens", "3", "--warmup", "0", "--profiles-dir", str(profiles)])
    assert status == 0

    header, rows = read_csv(only(profiles, "batch_profiling_cpu_noncc_*.csv"))
    assert header == BATCH_COLUMNS
    for model in ALIASES:
        mine = [r for r in rows if r["model"] == model]
        # Sizes 1, 2, 3 fit twice each; 5 runs out of memory at its first run; 8 is never tried.
        assert [(r["batch_size"], r["run"], r["oom"]) for r in mine] == [
            ("1", "1", "False"), ("1", "2", "False"), ("2", "1", "False"), ("2", "2", "False"),
            ("3", "1", "False"), ("3", "2", "False"), ("5", "1", "True")]
        assert all(float(r["processing_time_s"]) > 0 and r["max_new_tokens"] == "3"
                   for r in mine)
        assert mine[-1]["retries"] == "1" and mine[0]["cpu_mean_pct"] != ""
    header, best = read_csv(only(profiles, "best_batch_cpu_noncc_*.csv"))
    assert header == BEST_BATCH_COLUMNS
    assert sorted((b["model"], b["largest_batch"], b["oom_batch"]) for b in best) == [
        (model, "3", "5") for model in ALIASES]

    profile_set = load_profiles("cpu_noncc", profiles)
    assert sorted(profile_set.models) == ALIASES
    for model in ALIASES:
        assert profile_set[model].largest_batch(3) == 3
        assert profile_set[model].best_batch(3) in (1, 2, 3)
        assert profile_set[model].load_path == "host_cache"
        assert profile_set[model].copy_mode in ("pageable", "chunked")
    assert profile_set.swap_s("granite-7b", "llama3-8b") > 0.0
    # Where the set came from: every source either file names, each a measurement here.
    written = {r["source"] for r in rows} | {
        r["source"] for r in read_csv(only(profiles, "model_loading_times_cpu_noncc_*.csv"))[1]}
    assert set(profile_set.sources) == written
    assert all(source.startswith("measured: ") for source in written)


def test_the_fastest_copy_mode_is_chosen_and_every_figure_given() -> None:
    from sincere.engine.load_paths import choose

    choice = choose({"pageable": [2.4, 2.2, 2.6], "chunked": [1.1, 1.3, 0.9],
                     "pinned": "pinning refused"}, "llama3-8b", 16.06)
    assert (choice.mode, choice.median_s) == ("chunked", {"pageable": 2.4, "chunked": 1.1,
                                                          "pinned": None})
    assert choice.reason == ("chunked fastest: pageable 2.4000 s, chunked 1.1000 s (median swap "
                             "of llama3-8b, 16.060 GB); pinned not timed (pinning refused)")
    assert choose({"pinned": [0.3], "chunked": [0.3]}, "m", 1.0).mode == "pinned"  # a tie
    with pytest.raises(ValueError, match="no copy mode"):
        choose({"pinned": "needs CUDA"}, "m", 1.0)


@pytest.mark.slow
def test_run_profiling_waits_quietly_and_says_what_is_left(tiny_models: Path, workloads: Path,
                                                           tmp_path: Path) -> None:
    """run_profiling.sh on the tiny models, one size: one line while the app starts (bash's
    refused /dev/tcp connections are not shown), and each batch line with the time left."""
    env = {**os.environ, "PYTHON": sys.executable, "MODELS_DIR": str(tiny_models),
           "WORKLOADS_DIR": str(workloads), "PROFILES_DIR": str(tmp_path / "profiles"),
           "LOG_DIR": str(tmp_path / "logs"), "PORT": str(free_port()), "ITERATIONS": "1",
           "MAX_BATCH": "1", "RUNS": "1", "MAX_NEW_TOKENS": "3", "TIME_LIMIT_S": "600",
           "MODELS": "granite-7b"}
    done = subprocess.run(["bash", str(REPO_ROOT / "run_profiling.sh")], env=env,
                          capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Connection refused" not in output and "/dev/tcp" not in output
    assert output.count("waiting for the app to read the models and answer /health") == 1
    assert "  granite-7b: sizes 1..1, no new size after" in output
    [batch_line] = [line for line in output.splitlines() if "granite-7b batch" in line]
    assert batch_line.endswith(" left of the time limit)")
