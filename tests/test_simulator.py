"""The discrete-event simulator: event order, determinism, timers, drain and accounting."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sincere.grid.points import GridPoint, expand_grid
from sincere.profiles.profile_set import load_profiles
from sincere.scheduling.strategies import make_strategy
from sincere.simulation.simulator import (
    ARRIVAL,
    BATCH_DONE,
    END_OF_TRAFFIC,
    WAKE,
    Durations,
    EventQueue,
    SimTask,
    run_task,
    simulate,
)
from sincere.traffic.schedule import Schedule
from tests.profile_fixtures import two_models

PROFILES = two_models()
MIX = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}


def schedule(*arrivals: tuple[float, str]) -> Schedule:
    return Schedule([t for t, _ in arrivals], [m for _, m in arrivals], [""] * len(arrivals),
                    [None] * len(arrivals))


def test_event_queue_orders_by_time_priority_then_push_order() -> None:
    events = EventQueue()
    events.push(5.0, WAKE, "wake")
    events.push(5.0, ARRIVAL, "second arrival")
    events.push(5.0, END_OF_TRAFFIC, "end")
    events.push(5.0, BATCH_DONE, "done")
    events.push(4.0, WAKE, "earlier")
    events.push(5.0, ARRIVAL, "third arrival")
    popped = [events.pop()[3] for _ in range(len(events))]
    assert popped == ["earlier", "done", "second arrival", "third arrival", "end", "wake"]


def test_completion_is_applied_before_arrivals_at_the_same_instant() -> None:
    # Four requests at 0 s fill B = 4: load a (10 s) + P(4) (3 s) -> done at 13 s, exactly when
    # four more arrive. The completion comes first, then the arrivals, then one decision: the
    # second batch leaves at 13 s with all four.
    arrivals = [(0.0, "a")] * 4 + [(13.0, "a")] * 4
    outcome = simulate(schedule(*arrivals), make_strategy("BestBatch"), PROFILES, 60.0, 50,
                       duration_s=100.0, jitter=False, keep_event_log=True)
    at_13 = [(priority, seq) for t, priority, seq in outcome.event_log if t == 13.0]
    assert [p for p, _ in at_13] == [BATCH_DONE] + [ARRIVAL] * 4
    assert [s for _, s in at_13[1:]] == sorted(s for _, s in at_13[1:])
    assert [(b.dispatch_s, b.batch_size, b.reason) for b in outcome.batches] == [
        (0.0, 4, "full"), (13.0, 4, "full")]
    assert outcome.batches[1].swap_s == 0.0  # a is resident: no swap


def test_timer_and_drain_in_the_simulator() -> None:
    # Two requests for a at 0 s under BestBatch+Timer: the timer fires at
    # 60 - 10 (load) - 7/3 (P(2)) - 1 (margin); a lone b request at 50 s waits for the drain.
    outcome = simulate(schedule((0.0, "a"), (0.0, "a"), (50.0, "b")),
                       make_strategy("BestBatch+Timer", margin_s=1.0), PROFILES, 60.0, 50,
                       duration_s=55.0, jitter=False)
    first, second = outcome.batches
    assert first.dispatch_s == pytest.approx(60 - 10 - 7 / 3 - 1)
    assert (first.model, first.batch_size, first.reason) == ("a", 2, "timer")
    assert first.end_s - first.start_s == pytest.approx(7 / 3)
    # b's own timer (50 + 60 - 2 - 20 - 2 - 1 = 85 s) is later than the end of traffic at 55 s;
    # the drain starts then, and b leaves once a's batch is done at 46.667 + 10 + 2.333 = 59 s.
    assert (second.model, second.reason) == ("b", "drain")
    assert second.dispatch_s == pytest.approx(59.0)
    assert second.swap_from == "a" and second.swap_s == pytest.approx(2.0 + 20.0)
    assert outcome.accounting["unserved"] == 0
    assert all(r.status == "ok" for r in outcome.requests)


def test_drain_timeout_leaves_requests_unserved_and_counted() -> None:
    # Twenty requests for b at 0 s, BestBatch, drain timeout 30 s: from 0 s, batches of 4 take
    # 20 + 3 s, then 3 s each: 23, 26, 29, 32 (dispatched at 29 < 30), then the deadline passes.
    arrivals = [(0.0, "b")] * 22
    outcome = simulate(schedule(*arrivals), make_strategy("BestBatch"), PROFILES, 60.0, 50,
                       duration_s=0.0, drain_timeout_s=30.0, jitter=False)
    assert [b.end_s for b in outcome.batches] == pytest.approx([23.0, 26.0, 29.0, 32.0])
    assert outcome.accounting == {"issued": 22, "received": 22, "completed": 16, "rejected": 0,
                                  "failed": 0, "unserved": 6, "shed": 0}
    unserved = [r for r in outcome.requests if r.status == "unserved"]
    assert len(unserved) == 6 and all(r.end_s is None and not r.row()["sla_met"]
                                      for r in unserved)
    assert outcome.run_time_s == pytest.approx(32.0)


def sim_task(tmp_path: Path, point: GridPoint, name: str = "run") -> SimTask:
    return SimTask(point=point, run_dir=tmp_path / name, profiles=load_profiles("h100-orig_cc"),
                   profiles_name="h100-orig_cc", duration_s=120.0, base_seed=7, model_mix=MIX,
                   max_new_tokens=50, drain_timeout_s=60.0, jitter=True,
                   strategy_options={"margin_s": 1.0}, pattern_options={}, rate_window_s=60.0)


def test_same_seed_same_output(tmp_path: Path) -> None:
    point = GridPoint("BestBatch+PartialBatch+Timer", "bursty", 8.0, 40.0, 0)
    run_task(sim_task(tmp_path, point, "one"))
    run_task(sim_task(tmp_path, point, "two"))
    for name in ("requests.csv", "batches.csv", "schedule.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    other = GridPoint("BestBatch+PartialBatch+Timer", "bursty", 8.0, 40.0, 1)
    run_task(sim_task(tmp_path, other, "three"))
    assert ((tmp_path / "one" / "batches.csv").read_bytes()
            != (tmp_path / "three" / "batches.csv").read_bytes())


@pytest.mark.parametrize("point", expand_grid(
    ["BestBatch", "BestBatch+Timer", "SelectBatch+Timer", "BestBatch+PartialBatch+Timer",
     "Immediate", "Dynamic+Delay"], ["gamma", "ramp"], [12.0], [40.0], 1),
    ids=lambda p: p.run_id)
def test_every_request_is_accounted_for(tmp_path: Path, point: GridPoint) -> None:
    run = run_task(sim_task(tmp_path, point))
    requests = pd.read_csv(tmp_path / "run" / "requests.csv")
    batches = pd.read_csv(tmp_path / "run" / "batches.csv")
    accounting = run["accounting"]
    assert accounting["issued"] == len(requests) == requests["request_id"].nunique()
    assert accounting["issued"] == sum(accounting[k] for k in
                                       ("completed", "rejected", "failed", "unserved"))
    assert set(requests["status"]) <= {"ok", "unserved"}
    ok = requests[requests["status"] == "ok"]
    # Every served request sits in exactly one batch of its own model, after it arrived.
    assert ok.groupby("batch_id").size().to_dict() == batches.set_index("batch_id")[
        "batch_size"].to_dict()
    merged = ok.merge(batches, on="batch_id", suffixes=("", "_batch"))
    assert (merged["model"] == merged["model_batch"]).all()
    assert (merged["dispatch_s"] >= merged["arrival_s"] - 1e-6).all()
    assert (merged["latency_s"] - (merged["end_s"] - merged["arrival_s"])).abs().max() < 1e-5
    # One batch at a time on the GPU.
    assert (batches["dispatch_s"].iloc[1:].to_numpy()
            >= batches["end_s"].iloc[:-1].to_numpy() - 1e-6).all()
    assert set(batches["reason"]) <= {"full", "timer", "partial", "drain", "immediate"}
    assert run["params"]["engine"] == "sim" and run["environment"]["cc_mode"] == "on"


def test_a_full_queue_refuses_arrivals_as_the_server_does() -> None:
    # BestBatch holds b's requests for a batch of 4; with max_queue 2, the third and fourth
    # arrivals find two waiting and are refused, the fifth too; the drain serves the two.
    arrivals = [(float(i), "b") for i in range(5)]
    outcome = simulate(schedule(*arrivals), make_strategy("BestBatch"), PROFILES, 60.0, 50,
                       duration_s=10.0, jitter=False, max_queue=2)
    status = {r.request_id: r.status for r in outcome.requests}
    assert status == {"r000000": "ok", "r000001": "ok", "r000002": "rejected",
                      "r000003": "rejected", "r000004": "rejected"}
    assert outcome.accounting["rejected"] == 3 and outcome.accounting["completed"] == 2
    rejected = next(r for r in outcome.requests if r.status == "rejected")
    assert rejected.end_s is None and not rejected.row()["sla_met"]


def test_drawn_durations_keep_the_profiled_mean_and_stay_positive() -> None:
    """Load times of the original study (3.55 +- 2.51 s): a normal clipped at a floor would
    raise the mean; the gamma draw keeps it within 0.5% over 100,000 draws, never at 0."""
    durations = Durations(PROFILES, 50, np.random.default_rng(0))
    draws = np.array([durations.draw(3.55, 2.51) for _ in range(100_000)])
    assert draws.min() > 0
    assert draws.mean() == pytest.approx(3.55, rel=0.005)
    assert draws.std() == pytest.approx(2.51, rel=0.02)


def test_a_whole_trace_is_replayed_and_drained(tmp_path: Path) -> None:
    """DURATION_S = inf: the traffic ends at the trace's last arrival, the drain serves what
    is left, and run.json holds no Infinity or NaN."""
    trace = Path(__file__).parent / "data" / "azure_conv_excerpt.csv"
    task = replace(sim_task(tmp_path, GridPoint("BestBatch+Timer", "trace", 0.0, 40.0, 0)),
                   duration_s=math.inf, pattern_options={"trace_path": str(trace)})
    run = run_task(task)
    text = (tmp_path / "run" / "run.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert run["accounting"]["unserved"] == 0
    assert run["accounting"]["completed"] == run["accounting"]["issued"] > 0
    last_arrival_s = pd.read_csv(tmp_path / "run" / "schedule.csv")["scheduled_s"].max()
    assert run["traffic_window_s"] == pytest.approx(last_arrival_s)
    assert all(value is None or math.isfinite(value) for value in run["summary"].values())
    assert json.loads(text)["params"]["duration_s"] is None
