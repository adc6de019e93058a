"""The experiment server end to end on the tiny models: every strategy, every request accounted.

Each run goes through HTTP, the scheduler thread and the real engine (tests/server_support.py).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import requests

from sincere.scheduling.strategies import STRATEGIES, Strategy, make_strategy
from sincere.scheduling.view import Decision, SchedulerView
from tests.conftest import SERVER_TEST_NEW_TOKENS as MAX_NEW_TOKENS
from tests.server_support import MODELS, HoldToLargest, run_in_process, schedule_for


def assert_accounted(out, issued: int) -> None:
    """issued = received = ok + rejected + failed + unserved + shed, each request once, both
    sides."""
    accounting = out.run["accounting"]
    assert accounting["issued"] == issued
    assert accounting["received"] == issued == len(out.requests)
    assert sum(accounting[k] for k in ("completed", "rejected", "failed", "unserved",
                                       "shed")) == issued
    assert sorted(out.requests["request_id"]) == [f"r{i:06d}" for i in range(issued)]
    assert len(out.client) == issued
    assert set(out.requests["status"]) <= {"ok", "rejected", "failed", "unserved", "shed"}


def recording(name: str) -> Strategy:
    """The strategy ``name`` with its defaults, keeping every decision the server asks of it:
    (the view's time, whether the view said the traffic had ended, the decision)."""
    base = type(make_strategy(name))

    @dataclass(frozen=True)
    class Recording(base):  # type: ignore[valid-type, misc]
        decisions: list = field(default_factory=list, compare=False)

        def decide(self, view: SchedulerView) -> Decision:
            decision = super().decide(view)
            self.decisions.append((view.now, view.draining, decision))
            return decision

    return Recording()


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_short_run_of_each_strategy(strategy: str, engine, tiny_profile,
                                      server_workloads: Path, tmp_path: Path) -> None:
    schedule = schedule_for(server_workloads, mean_rps=6.0, duration_s=4.0, seed=1)
    recorded = recording(strategy)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run", recorded,
                         schedule, sla_s=8.0, max_new_tokens=MAX_NEW_TOKENS)
    assert_accounted(out, len(schedule))
    assert out.run["status"] == "complete"
    assert (out.requests["status"] == "ok").all()
    assert all(row["http_status"] == 200 for row in out.client)
    # Every request ran in a batch of its own model, of the recorded size, with the
    # tokens asked for; batch sizes never exceed the largest profiled batch.
    batches = out.batches.set_index("batch_id")
    for row in out.requests.itertuples():
        batch = batches.loc[row.batch_id]
        assert batch.model == row.model
        assert batch.batch_size == row.batch_size
        assert row.output_tokens == MAX_NEW_TOKENS
        assert row.latency_s == pytest.approx(row.end_s - row.arrival_s, abs=2e-6)
    assert out.batches["batch_size"].sum() == len(schedule)
    assert out.batches["batch_size"].max() <= max(
        tiny_profile[m].largest_batch(MAX_NEW_TOKENS) for m in MODELS)
    reasons = set(out.batches["reason"])
    expected = {"BestBatch": {"full", "drain"}, "Immediate": {"immediate", "drain"},
                "Dynamic+Delay": {"full", "timer", "drain"},
                "MaxGoodput": {"full", "timer", "drain"}}.get(
        strategy, {"full", "timer", "partial", "drain"})
    assert reasons <= expected
    # The server ran exactly what the strategy decided, in order, for the strategy's reasons
    # (which the table-driven tests in test_strategies.py check decision by decision)...
    ran = [d for _, _, d in recorded.decisions if d.runs]
    assert [(d.model, d.size, d.reason) for d in ran] == list(
        out.batches[["model", "batch_size", "reason"]].itertuples(index=False, name=None))
    # ...and told it the traffic had ended only once /stop came: every decision taken before
    # it saw none (so nothing could leave as a drain), every one after it saw the drain.
    stop_s = out.run["traffic_end_s"]
    assert all(now_s >= stop_s if draining else now_s <= stop_s
               for now_s, draining, _ in recorded.decisions)
    assert not out.batches[out.batches["reason"] == "drain"]["dispatch_s"].lt(stop_s).any()
    # A batch leaves with the size its reason allows: full and a drain never more than B, a
    # timer less than B (else it was full), a partial batch only of the resident model.
    best = {m: tiny_profile[m].best_batch(MAX_NEW_TOKENS) for m in MODELS}
    for batch in out.batches.itertuples():
        limit = best[batch.model]
        assert batch.batch_size <= limit
        if batch.reason == "timer":
            assert batch.batch_size < limit
        if batch.reason == "full" and strategy != "SelectBatch+Timer":
            assert batch.batch_size == limit  # SelectBatch's target may be smaller than B
        if batch.reason == "partial":
            assert pd.isna(batch.swap_from)
    # The run's clock began at /start, before the generator's: each request reached the server
    # no earlier on the run's clock than the generator sent it on its own. The generator's
    # parameters reached run.json.
    sent_s = {row["request_id"]: row["sent_s"] for row in out.client}
    assert all(row.arrival_s >= sent_s[row.request_id] for row in out.requests.itertuples())
    assert out.run["params"]["pattern"] == "test"
    assert out.run["params"]["strategy"] == strategy


def test_removing_a_model_mid_run(engine, tiny_profile, server_workloads: Path,
                                  tmp_path: Path) -> None:
    """Its queued requests fail with 410 and a clear error, later ones are refused with 410, it
    is never loaded again, and the other models go on being served."""
    schedule = schedule_for(server_workloads, mean_rps=8.0, duration_s=5.0, seed=2)
    removed_at: dict[str, float] = {}

    def remove_gemma(server, url: str) -> None:
        # Once two of gemma's requests wait in its queue (the event, not a time: HoldToLargest
        # sends no batch before 8 are queued, and gemma gets one request in three or so).
        while server.status()["queues"]["gemma-7b"] < 2:
            threading.Event().wait(0.01)
        answer = requests.delete(f"{url}/models/gemma-7b", timeout=10)
        removed_at["s"] = server.now()
        assert answer.status_code == 200
        assert requests.delete(f"{url}/models/gemma-7b", timeout=10).status_code == 404

    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run",
                         HoldToLargest(), schedule, sla_s=30.0, max_new_tokens=MAX_NEW_TOKENS,
                         during=remove_gemma)
    assert_accounted(out, len(schedule))
    gemma = out.requests[out.requests["model"] == "gemma-7b"]
    others = out.requests[out.requests["model"] != "gemma-7b"]
    after = gemma[gemma["arrival_s"] > removed_at["s"]]
    assert len(after) > 0 and (after["status"] == "rejected").all()
    assert (gemma["status"].isin(["ok", "failed", "rejected"])).all()
    assert (gemma["status"] != "ok").any()
    assert (others["status"] == "ok").all()
    gemma_batches = out.batches[out.batches["model"] == "gemma-7b"]
    assert (gemma_batches["start_s"] < removed_at["s"]).all()  # never loaded again
    by_id = {row["request_id"]: row for row in out.client}
    for row in gemma.itertuples():
        client = by_id[row.request_id]
        if row.status == "ok":
            assert client["http_status"] == 200
        else:
            assert client["http_status"] == 410
            assert "removed" in client["error"]
    assert out.run["params"]["removed_models"] == ["gemma-7b"]


def test_status_and_models_endpoints(engine, tiny_profile, server_workloads: Path,
                                     tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def look(server, url: str) -> None:
        seen["health"] = requests.get(f"{url}/health", timeout=10).json()
        seen["status"] = requests.get(f"{url}/status", timeout=10).json()
        seen["models"] = requests.get(f"{url}/models", timeout=10).json()

    schedule = schedule_for(server_workloads, mean_rps=4.0, duration_s=2.0, seed=3)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run", "Immediate",
                         schedule, sla_s=10.0, max_new_tokens=MAX_NEW_TOKENS, during=look)
    assert_accounted(out, len(schedule))
    assert seen["health"]["status"] == "ok" and seen["health"]["models"] == sorted(MODELS)
    assert set(seen["status"]["queues"]) == set(MODELS)
    assert {m["alias"] for m in seen["models"]["models"]} == set(MODELS)
    best = {m["alias"]: m["best_batch"] for m in seen["models"]["models"]}
    assert best == {m: tiny_profile[m].best_batch(MAX_NEW_TOKENS) for m in MODELS}


def test_no_prompt_text_in_any_file(engine, tiny_profile, server_workloads: Path,
                                    tmp_path: Path) -> None:
    """The prompts of a run are nowhere in what it writes."""
    schedule = schedule_for(server_workloads, mean_rps=6.0, duration_s=2.0, seed=4)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run", "Immediate",
                         schedule, sla_s=10.0, max_new_tokens=MAX_NEW_TOKENS)
    prompts = {json.loads((server_workloads / f"{pid}.json").read_text())["prompt"]
               for pid in schedule.prompt_ids}
    # A distinctive piece of each prompt: its longest line.
    pieces = {max(p.splitlines(), key=len) for p in prompts}
    written = "".join(f.read_text() for f in out.run_dir.iterdir() if f.is_file())
    assert not [p for p in pieces if p in written]


def test_adding_a_model_folder_mid_run(engine, tiny_models: Path, tiny_profile,
                                       tmp_path: Path) -> None:
    """POST /models serves a folder from anywhere under a new alias, once it has a profile."""
    import dataclasses

    from sincere.scheduling.strategies import make_strategy
    from sincere.serving.app import create_app
    from sincere.serving.http_server import serving
    from sincere.serving.server import ExperimentServer

    copy = dataclasses.replace(tiny_profile["llama3-8b"], model="llama-copy")
    profiles = dataclasses.replace(tiny_profile,
                                   models={**tiny_profile.models, "llama-copy": copy})
    server = ExperimentServer(engine, profiles, make_strategy("Immediate"), 30.0, 2,
                              tmp_path / "run", ["llama3-8b"]).start()
    body = {"prompt": "Say hello.", "model_alias": "llama-copy"}
    try:
        with serving(create_app(server)) as url:
            assert requests.post(f"{url}/inference", json=body, timeout=30).status_code == 404
            no_profile = requests.post(f"{url}/models", json={"alias": "other"}, timeout=30)
            assert no_profile.status_code == 422 and "no profile" in no_profile.json()["error"]
            missing = requests.post(f"{url}/models", json={
                "alias": "llama-copy", "path": str(tmp_path / "nowhere")}, timeout=30)
            assert missing.status_code == 422 and "no such model folder" in missing.json()[
                "error"]
            added = requests.post(f"{url}/models", json={
                "alias": "llama-copy", "path": str(tiny_models / "llama3-8b")}, timeout=30)
            assert added.status_code == 201
            assert added.json()["models"] == ["llama-copy", "llama3-8b"]
            again = requests.post(f"{url}/models", json={"alias": "llama-copy"}, timeout=30)
            assert again.status_code == 409
            answer = requests.post(f"{url}/inference", json=body, timeout=60)
            assert answer.status_code == 200 and answer.json()["model"] == "llama-copy"
            requests.post(f"{url}/stop", json={}, timeout=60)
    finally:
        server.abort()
        server.wait_finished(30)
        server.close()
        engine.unload()
        engine.evict("llama-copy")
    assert server.run_json["params"]["models"] == ["llama-copy", "llama3-8b"]



def test_times_are_final_when_the_run_finishes(engine, tiny_profile, tmp_path: Path) -> None:
    """A request refused after the run finished is recorded and counted, but no duration, rate
    or fraction changes (before, run_time_s grew to the moment of the late request)."""
    from sincere.scheduling.strategies import make_strategy
    from sincere.serving.app import create_app
    from sincere.serving.http_server import serving
    from sincere.serving.server import ExperimentServer

    offset_s = [0.0]  # the server's clock, advanced by hand once the run is over
    server = ExperimentServer(engine, tiny_profile, make_strategy("Immediate"), 30.0, 2,
                              tmp_path / "run", ["llama3-8b"],
                              clock=lambda: time.monotonic() + offset_s[0]).start()
    body = {"prompt": "Say hello.", "model_alias": "llama3-8b"}
    try:
        with serving(create_app(server)) as url:
            requests.post(f"{url}/start", json={"params": {"duration_s": 1.0}}, timeout=30)
            assert requests.post(f"{url}/inference", json=body, timeout=60).status_code == 200
            finished = requests.post(f"{url}/stop", json={"issued": 1}, timeout=60).json()
            offset_s[0] = 300.0
            late = requests.post(f"{url}/inference", json=body, timeout=30)
            assert late.status_code == 503
    finally:
        server.abort()
        server.wait_finished(30)
        server.close()
        engine.unload()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["accounting"]["received"] == 2 and run["accounting"]["rejected"] == 1
    assert run["run_time_s"] < 60 and run["traffic_window_s"] == 1.0
    for key in ("throughput_rps", "goodput_rps", "gpu_busy_fraction", "run_time_s", "drain_s"):
        assert run["summary"][key] == finished["summary"][key], key


def test_late_requests_are_shed_with_a_clear_answer(engine, tiny_profile, server_workloads: Path,
                                                    tmp_path: Path) -> None:
    """SHED_LATE: BestBatch waits for full batches that two requests a second never fill within
    a 1.5 s SLA, so queued requests become hopeless; each is settled at once as shed, answered
    503 with a JSON error that says so, and counted."""
    from sincere.scheduling.strategies import make_strategy

    schedule = schedule_for(server_workloads, mean_rps=2.0, duration_s=4.0, seed=8)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run",
                         make_strategy("BestBatch", shed_late=True), schedule, sla_s=1.5,
                         max_new_tokens=MAX_NEW_TOKENS)
    assert_accounted(out, len(schedule))
    shed = out.requests[out.requests["status"] == "shed"]
    assert len(shed) > 0 and out.run["accounting"]["shed"] == len(shed)
    assert shed["end_s"].isna().all() and not shed["sla_met"].astype(bool).any()
    client = {row["request_id"]: row for row in out.client}
    for request_id in shed["request_id"]:
        assert client[request_id]["http_status"] == 503
        assert "can no longer complete within its SLA" in client[request_id]["error"]
    assert out.run["summary"]["requests_shed"] == len(shed)
    assert out.run["params"]["strategy_params"]["shed_late"] is True
