"""Faults survived: failing batches, a model that will not load, timeouts, killed processes,
overload, and prompts that must not leak. Each ends with every request accounted for."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sincere.assets.workloads import read_workloads, write_workloads
from sincere.engine.engine import Engine
from sincere.grid.children import ROOT
from sincere.runs.metrics import swapped_batches
from sincere.serving.app import create_app
from sincere.serving.http_server import serving
from sincere.serving.server import ExperimentServer
from sincere.traffic.client import send_schedule
from tests.conftest import FINISHED_RUN
from tests.conftest import SERVER_TEST_NEW_TOKENS as NEW_TOKENS
from tests.server_support import (
    MODELS,
    HoldToLargest,
    one_cpu_thread,
    run_in_process,
    runner_argv,
    schedule_for,
)


def test_a_failing_batch_fails_its_requests_at_once_and_the_server_goes_on(
        engine, tiny_profile, server_workloads: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An error other than out-of-memory is not retried: the requests of the batch it hit
    fail with its class name, the other batches are served and the run completes."""
    schedule = schedule_for(server_workloads, mean_rps=6.0, duration_s=4.0, seed=11)
    prompts = read_workloads(server_workloads)
    poison = prompts[schedule.prompt_ids[3]]
    real = engine._generate_batch

    def failing(batch_prompts: list[str], max_new_tokens: int):
        if poison in batch_prompts:  # a fault injected where the engine calls the model
            raise RuntimeError("injected fault")
        return real(batch_prompts, max_new_tokens)

    monkeypatch.setattr(engine, "_generate_batch", failing)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run",
                         "BestBatch+Timer", schedule, sla_s=8.0, max_new_tokens=NEW_TOKENS)
    poisoned = {f"r{i:06d}" for i, pid in enumerate(schedule.prompt_ids) if prompts[pid] == poison}
    rows = out.requests.set_index("request_id")
    hit = set(rows.index[rows["batch_id"].isin(rows.loc[sorted(poisoned), "batch_id"])])
    assert poisoned <= hit
    assert set(rows.index[rows["status"] == "failed"]) == hit
    assert (rows.drop(index=sorted(hit))["status"] == "ok").all() and len(rows) > len(hit)
    client = {row["request_id"]: row for row in out.client}
    for request_id in hit:
        assert client[request_id]["http_status"] == 500
        assert client[request_id]["error"] == "RuntimeError"
    assert out.batches["retries"].sum() == 0
    assert out.run["status"] == "complete"


def test_out_of_memory_splits_and_every_request_is_served(
        engine, tiny_profile, server_workloads: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "oom_batch_limit", 2)  # a batch of 3 or more runs out
    schedule = schedule_for(server_workloads, mean_rps=8.0, duration_s=3.0, seed=12)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run",
                         HoldToLargest(), schedule, sla_s=8.0, max_new_tokens=NEW_TOKENS)
    assert (out.requests["status"] == "ok").all()
    big = out.batches[out.batches["batch_size"] > 2]
    assert len(big) > 0 and (big["retries"] > 0).all()
    assert (out.batches[out.batches["batch_size"] <= 2]["retries"] == 0).all()


def test_a_model_that_will_not_load_fails_its_requests_only(
        tiny_models: Path, tiny_profile, server_workloads: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_models, models_dir)
    (models_dir / "gemma-7b" / "model.safetensors").write_bytes(b"not a safetensors file")
    one_cpu_thread()
    engine = Engine(models_dir, host_cache=True, max_new_tokens=NEW_TOKENS)
    schedule = schedule_for(server_workloads, mean_rps=6.0, duration_s=4.0, seed=13)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run",
                         "Immediate", schedule, sla_s=8.0, max_new_tokens=NEW_TOKENS)
    gemma = out.requests[out.requests["model"] == "gemma-7b"]
    assert len(gemma) > 0 and (gemma["status"] == "failed").all()
    assert (out.requests[out.requests["model"] != "gemma-7b"]["status"] == "ok").all()
    client = {row["request_id"]: row for row in out.client}
    for request_id in gemma["request_id"]:
        assert client[request_id]["http_status"] in (500, 503)
        assert "gemma-7b' could not be loaded" in client[request_id]["error"]
    assert list(out.run["broken_models"]) == ["gemma-7b"]
    # Tried once: the failed load is recorded as the swap it was, a gemma batch that processed
    # nothing; after it gemma's requests fail on arrival and it is never loaded again.
    tried = out.batches.index[out.batches["model"] == "gemma-7b"]
    assert len(tried) == 1
    assert out.batches.loc[tried[0], "processing_s"] == 0
    assert out.batches.loc[tried[0], "output_tokens"] == 0
    swapped = swapped_batches(out.batches)
    assert swapped[tried[0]]
    if tried[0] + 1 < len(out.batches):  # the next batch loads a model into an empty GPU
        assert swapped[tried[0] + 1]
    assert out.run["summary"]["swaps"] == swapped.sum()
    assert out.run["accounting"]["failed"] == len(gemma)


def test_a_generator_timeout_is_recorded_as_such(engine, tiny_profile, server_workloads: Path,
                                                 tmp_path: Path) -> None:
    """The requests are held until the drain; the generator gives up first."""
    schedule = schedule_for(server_workloads, mean_rps=1.5, duration_s=3.0, seed=14)
    server = ExperimentServer(engine, tiny_profile, HoldToLargest(), 30.0,
                              NEW_TOKENS, tmp_path / "run", list(MODELS)).start()
    try:
        with serving(create_app(server)) as url:
            result = send_schedule(url, schedule, read_workloads(server_workloads),
                                   client_csv=tmp_path / "client.csv", timeout_s=0.5)
    finally:
        server.wait_finished(30)
        server.close()
        engine.unload()
    assert len(result.rows) == len(schedule) > 0
    # Sent well before the stop at 3 s, a request waits for the drain longer than 0.5 s.
    early = [row for row in result.rows if row["scheduled_s"] < 2.0]
    assert early and all(row["error"] == "timeout" and row["http_status"] is None
                         for row in early)
    assert all(row["error"] in ("", "timeout") for row in result.rows)
    # The server served them in its drain and says so.
    assert server.run_json["accounting"]["completed"] == len(schedule)


def processes_of(folder: Path) -> list[psutil.Process]:
    """Live server and generator processes whose command line names ``folder``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(folder) in cmdline and ("api_scheduler" in cmdline or "api_calls" in cmdline):
            found.append(process)
    return found


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_server_killed_mid_run_fails_that_run_and_the_grid_goes_on(
        tmp_path: Path, tiny_models: Path, server_workloads: Path, tiny_profile) -> None:
    results = tmp_path / "results"
    runner = subprocess.Popen(runner_argv(results, tiny_models, server_workloads, tiny_profile,
                                          ["Immediate", "BestBatch+Timer"], duration_s=6.0),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    staged = results / ".partial" / "immediate__constant__rate3__sla5__rep0"

    def flushed_rows() -> int:
        path = staged / "requests.csv"
        return len(path.read_text().splitlines()) - 1 if path.is_file() else 0

    wait_for(lambda: flushed_rows() >= 3, 120, "three flushed request rows")
    servers = [p for p in processes_of(staged) if "api_scheduler" in " ".join(p.cmdline())]
    assert len(servers) == 1
    servers[0].kill()
    output, _ = runner.communicate(timeout=240)
    assert runner.returncode == 1, output  # some run failed
    failed = json.loads((results / staged.name / "run.json").read_text())
    assert failed["status"] == "failed"
    assert "server exited mid-run" in failed["failure"]
    assert failed["accounting"]["received"] >= 3  # the rows flushed before the kill are kept
    assert not failed["accounting_check"]["ok"]
    done = json.loads((results / "bestbatch-timer__constant__rate3__sla5__rep0" / "run.json")
                      .read_text())
    assert done["status"] == "complete" and done["accounting_check"]["ok"]
    assert "FAILED" in output and "accounting ok" in output


def test_a_killed_runner_leaves_no_process_and_a_rerun_resumes(
        tmp_path: Path, tiny_models: Path, server_workloads: Path, tiny_profile,
        finished_grid) -> None:
    """The grid's first run is the shared finished one (a copy); the runner is killed while
    it runs the second."""
    results = Path(shutil.copytree(finished_grid.results, tmp_path / "results"))
    argv = runner_argv(results, tiny_models, server_workloads, tiny_profile,
                       ["Immediate", "Dynamic+Delay"])
    runner = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = results / FINISHED_RUN
    second = results / ".partial" / "dynamic-delay__constant__rate3__sla5__rep0"
    wait_for(lambda: (second / "requests.csv").is_file(), 120, "the second run started")
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(10)
    wait_for(lambda: not processes_of(results), 30, "the children to follow the runner")
    kept = (first / "run.json").stat().st_mtime_ns
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "2 runs (1 already done with these parameters)" in rerun.stdout
    assert (first / "run.json").stat().st_mtime_ns == kept  # not run twice
    runs = sorted(p.name for p in results.iterdir())
    assert runs == ["dynamic-delay__constant__rate3__sla5__rep0",
                    "immediate__constant__rate3__sla5__rep0"]  # nothing lost, nothing doubled
    for name in runs:
        run = json.loads((results / name / "run.json").read_text())
        assert run["status"] == "complete" and run["accounting_check"]["ok"]


def test_marker_prompts_appear_in_no_file_and_no_log(tmp_path: Path, tiny_models: Path,
                                                    tiny_profile) -> None:
    """A real run whose every prompt carries a marker, one of them too long for the server:
    then every file it wrote, logs included, is searched for the marker."""
    marker = "ZQXJ-MARKER"
    prompts = [f"{marker}-{i} Write a short note about rivers number {i}." for i in range(30)]
    prompts += [f"{marker}-long-{i} " + "words " * 7000 for i in range(10)]  # too long: 413
    workloads = tmp_path / "workloads"
    write_workloads(prompts, ["llama3-8b"] * len(prompts), workloads)
    results = tmp_path / "results"
    run = subprocess.run(runner_argv(results, tiny_models, workloads, tiny_profile,
                                     ["Immediate"], duration_s=6.0) + ["--means", "5"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert marker not in run.stdout + run.stderr
    run_dir = results / "immediate__constant__rate5__sla5__rep0"
    written = sorted(p for p in run_dir.rglob("*") if p.is_file())
    assert {p.name for p in written} >= {"server.log", "generator.log", "requests.csv",
                                        "client.csv", "run.json", "monitor.csv"}
    assert [p.name for p in written if marker in p.read_text(errors="replace")] == []
    statuses = json.loads((run_dir / "run.json").read_text())["accounting"]
    assert statuses["completed"] > 0 and statuses["rejected"] > 0
    assert statuses["issued"] == statuses["received"]


def test_overload_every_request_answered_and_memory_bounded(
        tiny_models: Path, server_workloads: Path, tiny_profile) -> None:
    """A short version of benchmarks/load_test.py (the full one: 200 req/s for 30 s)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from load_test import run_load

    figures = run_load(tiny_models, server_workloads, "cpu_noncc",
                       Path(tiny_profile.loading_file).parent, rate=150.0, duration_s=4.0,
                       max_in_flight=400, max_queue=150, max_new_tokens=4)
    assert figures["problems"] == []
    assert figures["answers"].get(429, 0) > 0  # it was overloaded, and said so
    assert figures["memory_mib_peak"] < 4 * 1024


def test_a_scheduler_error_ends_the_run_with_every_request_accounted(
        engine, tiny_profile, tmp_path: Path) -> None:
    """A strategy that raises (a bug in a new strategy, say): the run ends as failed, what was
    queued is unserved, later requests get 503 and are recorded, and no caller hangs."""
    import dataclasses

    import requests


    @dataclasses.dataclass(frozen=True)
    class Broken(HoldToLargest):
        def decide(self, view):
            if view.queues["llama3-8b"].length >= 2:
                raise ZeroDivisionError("a bug")
            return super().decide(view)

    server = ExperimentServer(engine, tiny_profile, Broken(), 30.0, NEW_TOKENS,
                              tmp_path / "run", list(MODELS)).start()
    body = {"prompt": "Say hi.", "model_alias": "llama3-8b"}
    try:
        with serving(create_app(server)) as url:
            # The first request waits for a batch; the second trips the bug.
            import threading

            answers: list = []
            first = threading.Thread(target=lambda: answers.append(
                requests.post(f"{url}/inference", json=body, timeout=30)))
            first.start()
            wait_for(lambda: server.status()["queues"]["llama3-8b"] == 1, 10, "one queued")
            second = requests.post(f"{url}/inference", json=body, timeout=30)
            first.join(30)
            later = requests.post(f"{url}/inference", json=body, timeout=30)
    finally:
        server.wait_finished(30)
        server.close()
        engine.unload()
    assert sorted([answers[0].status_code, second.status_code]) == [503, 503]
    assert later.status_code == 503 and "run is over" in later.json()["error"]
    run = server.run_json
    assert run["status"] == "failed" and run["failure"] == "scheduler error: ZeroDivisionError"
    assert run["accounting"] == {"issued": None, "received": 3, "completed": 0, "rejected": 1,
                                 "failed": 0, "unserved": 2, "shed": 0}
