"""A discrete-event replay of one run from the profiles (SPEC section 4, engine ``sim``).

The loop is small and deterministic: a heap keyed by (time, priority, sequence), the sequence
owned by the simulation. At one instant, batch completions come first, then arrivals, then the
end of traffic, then timer wake-ups; the strategy is asked only once all events of that instant
are applied and the GPU is free. The strategy plans with L = mean + k·std; the durations that
actually elapse are drawn around the profiled means (or are the means with ``jitter`` off).
"""

from __future__ import annotations

import heapq
import itertools
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sincere.files import write_json_atomic
from sincere.grid.points import GridPoint
from sincere.profiles.length_term import served_prompt_tokens
from sincere.profiles.profile_set import ProfileSet
from sincere.runs.accounting import books_of_statuses
from sincere.runs.fidelity import profile_fit
from sincere.runs.identity import with_identity
from sincere.runs.metrics import run_metrics
from sincere.runs.params import run_params, traffic_params
from sincere.runs.records import (
    BatchRecord,
    RequestRecord,
    RunRecorder,
    as_row,
    served,
    settled,
)
from sincere.runs.window import traffic_window_s
from sincere.scheduling.bound import sla_attainment_bound
from sincere.scheduling.queues import QueueBook, Request
from sincere.scheduling.strategies import Strategy, make_strategy
from sincere.schemas import BATCH_COLUMNS, REQUEST_COLUMNS
from sincere.traffic.schedule import Schedule, build_schedule

# Event priorities at the same instant, lowest first.
BATCH_DONE, ARRIVAL, END_OF_TRAFFIC, WAKE = 0, 1, 2, 3


@dataclass
class SimOutcome:
    requests: list[RequestRecord]
    batches: list[BatchRecord]
    accounting: dict[str, int]
    run_time_s: float  # the traffic window and the drain after it
    traffic_window_s: float
    event_log: list[tuple[float, int, int]] = field(default_factory=list)  # (t, priority, seq)


class EventQueue:
    """Events ordered by (time, priority, sequence); the sequence breaks every remaining tie
    in the order events were pushed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Any]] = []
        self._sequence = itertools.count()

    def push(self, time_s: float, priority: int, payload: Any = None) -> int:
        seq = next(self._sequence)
        heapq.heappush(self._heap, (time_s, priority, seq, payload))
        return seq

    def pop(self) -> tuple[float, int, int, Any]:
        return heapq.heappop(self._heap)

    def peek_time(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def __len__(self) -> int:
        return len(self._heap)


class Durations:
    """The time a swap or a batch actually takes: the profiled mean, or a draw from a gamma
    distribution with the profiled mean and standard deviation (never at or below zero, and
    unbiased: a normal clipped at a floor would raise the mean of widely spread load times)."""

    def __init__(self, profiles: ProfileSet, max_new_tokens: int, rng: np.random.Generator | None):
        self.profiles = profiles
        self.max_new_tokens = max_new_tokens
        self.rng = rng

    def draw(self, mean: float, std: float) -> float:
        if self.rng is None or std <= 0 or mean <= 0:
            return mean
        # Gamma with shape (mean/std)^2 and scale std^2/mean has exactly that mean and std.
        return float(self.rng.gamma((mean / std) ** 2, std * std / mean))

    def swap_s(self, current: str | None, target: str) -> float:
        if current == target:
            return 0.0
        unload_s = 0.0
        if current is not None:
            p = self.profiles[current]
            unload_s = self.draw(p.unload_mean_s, p.unload_std_s)
        p = self.profiles[target]
        return unload_s + self.draw(p.load_mean_s, p.load_std_s)

    def processing_s(self, model: str, size: int, longest: int | None = None) -> float:
        """A batch of ``size``: timed by its longest prompt (``longest`` tokens) where that and
        the profile's length term are known, else by P(size)."""
        return self.draw(*self.profiles[model].batch_time_s(size, longest, self.max_new_tokens))


def simulate(schedule: Schedule, strategy: Strategy, profiles: ProfileSet, sla_s: float,
             max_new_tokens: int, duration_s: float, drain_timeout_s: float = 600.0,
             seed: int = 0, jitter: bool = True, rate_window_s: float = 60.0,
             max_queue: int | None = None, keep_event_log: bool = False,
             served_tokens: Sequence[int | None] | None = None, replay: int = 0) -> SimOutcome:
    """Replay ``schedule`` against ``strategy``; every request ends with a status.

    ``replay`` > 0 draws the batch and swap times with another jitter seed: the same arrivals
    replayed as another run of the server would take them.

    ``served_tokens``: each request's prompt tokens as the server would count them
    (sincere.profiles.length_term); a batch whose prompts are all known is then timed by its
    longest.

    ``max_queue`` has the server's meaning: a request arriving while that many wait is refused
    (``rejected``). ``duration_s`` may be infinite: the traffic then ends at the last arrival.
    """
    models = list(dict.fromkeys(schedule.models)) or list(profiles.models)
    for model in models:
        profiles[model]  # a missing profile is an error before anything runs
    book = QueueBook(models, rate_window_s=rate_window_s)
    jitter_seed = [seed, 0x5EED] + ([replay] if replay else [])  # replay 0: as it always was
    durations = Durations(profiles, max_new_tokens,
                           np.random.default_rng(jitter_seed) if jitter else None)
    events = EventQueue()
    request_ids = schedule.request_ids()
    for i, arrival_s in enumerate(schedule.scheduled_s):
        events.push(float(arrival_s), ARRIVAL, i)
    last_arrival_s = float(schedule.scheduled_s[-1]) if len(schedule) else None
    window_s = traffic_window_s(duration_s, last_arrival_s)
    events.push(max(x for x in (window_s, last_arrival_s, 0.0) if x is not None
                    and math.isfinite(x)), END_OF_TRAFFIC)

    records: list[RequestRecord] = []
    batches: list[BatchRecord] = []
    event_log: list[tuple[float, int, int]] = []
    resident: str | None = None
    gpu_free = True
    draining = False
    drain_deadline_s = math.inf
    last_wake_s = math.nan
    last_end_s = 0.0

    while events:
        now = events.peek_time()
        while events and events.peek_time() == now:
            _, priority, seq, payload = events.pop()
            if keep_event_log:
                event_log.append((now, priority, seq))
            if priority == BATCH_DONE:
                gpu_free = True
            elif priority == ARRIVAL:
                i = payload
                request = Request(request_ids[i], schedule.models[i], now, now + sla_s,
                                  schedule.prompt_tokens[i] if served_tokens is None
                                  else served_tokens[i])
                if max_queue is not None and book.total() >= max_queue:
                    records.append(settled(request, "rejected", sla_s))
                else:
                    book.add(request)
            elif priority == END_OF_TRAFFIC:
                draining = True
                drain_deadline_s = now + drain_timeout_s
        if not gpu_free or now >= drain_deadline_s:
            continue
        decision = strategy.decide(book.view(now, resident, profiles, sla_s, max_new_tokens,
                                             draining))
        for model, count in decision.shed:
            hopeless = book.take(model, count)
            records.extend(settled(r, "shed", sla_s) for r in hopeless)
        if decision.runs:
            batch_requests = book.take(decision.model, decision.size)
            swap_s = durations.swap_s(resident, decision.model)
            start_s = now + swap_s
            lengths = ([r.prompt_tokens for r in batch_requests]
                       if served_tokens is not None else [])
            longest = max(lengths) if lengths and None not in lengths else None
            end_s = start_s + durations.processing_s(decision.model, len(batch_requests),
                                                     longest)
            batch = BatchRecord(
                batch_id=len(batches), model=decision.model, batch_size=len(batch_requests),
                reason=decision.reason, dispatch_s=now,
                swap_from=resident if swap_s > 0 else None, swap_s=swap_s, start_s=start_s,
                end_s=end_s, processing_s=end_s - start_s,
                output_tokens=max_new_tokens * len(batch_requests))
            batches.append(batch)
            records.extend(served(r, batch, sla_s, output_tokens=max_new_tokens)
                           for r in batch_requests)
            resident = decision.model
            gpu_free = False
            last_end_s = end_s
            events.push(end_s, BATCH_DONE)
        elif decision.wake_at is not None and decision.wake_at != last_wake_s:
            last_wake_s = decision.wake_at
            events.push(decision.wake_at, WAKE)

    unserved = book.take_all()
    records.extend(settled(r, "unserved", sla_s) for r in unserved)
    records.sort(key=lambda r: r.request_id)
    accounting = books_of_statuses((r.status for r in records), issued=len(schedule))
    run_time_s = max(window_s, last_end_s) if math.isfinite(window_s) else last_end_s
    return SimOutcome(records, batches, accounting, run_time_s, window_s, event_log)


@dataclass(frozen=True)
class SimTask:
    """Everything one simulated run needs; picklable, so runs can go to worker processes."""

    point: GridPoint
    run_dir: Path
    profiles: ProfileSet
    profiles_name: str
    duration_s: float
    base_seed: int
    model_mix: dict[str, float]
    max_new_tokens: int
    drain_timeout_s: float
    jitter: bool
    strategy_options: dict[str, Any]
    pattern_options: dict[str, Any]
    rate_window_s: float
    max_queue: int | None = None
    # {model: {prompt id: tokens}} of the workloads the generator draws from: batches are then
    # timed by their longest prompt (sincere.profiles.length_term); None: by their size alone.
    prompt_tokens: dict[str, dict[str, int]] | None = None
    # Replays of the same arrivals with other jitter seeds, the run written among them: run.json
    # gives the spread of REPLAY_METRICS over them (one run alone has no spread).
    replays: int = 1

    def length_term(self) -> bool:
        """Whether this run times batches by their prompts: it knows them and the profile of
        every model it serves has a length term."""
        return self.prompt_tokens is not None and all(
            self.profiles[m].has_length_term() for m in self.model_mix)

    def params(self) -> dict[str, Any]:
        """run.json's ``params`` block of this run, known before it runs (the grid compares its
        identity with a finished run's before reusing it)."""
        point = self.point
        traffic = traffic_params(pattern=point.pattern, pattern_params=self.pattern_options,
                                 mean_rps=point.mean_rps, duration_s=self.duration_s,
                                 seed=point.seed(self.base_seed), repeat=point.repeat,
                                 model_mix=self.model_mix)
        return run_params(
            traffic, strategy=point.strategy,
            strategy_params=make_strategy(point.strategy, **self.strategy_options).params(),
            sla_s=point.sla_s, max_new_tokens=self.max_new_tokens,
            models=sorted(self.model_mix), engine="sim",
            profiles=self.profiles.describe(self.profiles_name),
            drain_timeout_s=self.drain_timeout_s, max_queue=self.max_queue, jitter=self.jitter,
            length_term=self.length_term(), replays=self.replay_count())

    def replay_count(self) -> int:
        """Replays this run makes: without jitter every replay is the same run, so one."""
        return self.replays if self.jitter else 1


# Metrics whose spread over replays of the same arrivals a simulated run reports, and the
# percentiles of the replays that bound its range.
REPLAY_METRICS = ("sla_attainment", "latency_mean_s", "processing_mean_s", "swap_mean_s")
REPLAY_RANGE = (5.0, 95.0)


def replay_spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """run.json's ``replays`` block: how many replays, and each REPLAY_METRICS' mean and
    REPLAY_RANGE percentiles over them (None where no replay has the metric)."""
    spread: dict[str, Any] = {"runs": len(runs), "range_percentiles": list(REPLAY_RANGE),
                              "metrics": {}}
    for metric in REPLAY_METRICS:
        values = np.array([r[metric] for r in runs if r.get(metric) is not None], dtype=float)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, REPLAY_RANGE) if values.size else (None, None)
        spread["metrics"][metric] = {
            "mean": float(values.mean()) if values.size else None,
            "low": float(low) if low is not None else None,
            "high": float(high) if high is not None else None}
    return spread


def run_task(task: SimTask) -> dict[str, Any]:
    """Simulate one grid point and write its run directory; returns run.json's content."""
    point = task.point
    seed = point.seed(task.base_seed)
    counts = task.prompt_tokens if task.length_term() else None
    # The generator's prompt picks (the same seed and sorted prompt ids), when they are known.
    prompt_ids = sorted(next(iter(counts.values()))) if counts else None
    schedule = build_schedule(point.pattern, point.mean_rps, task.duration_s, seed,
                              task.model_mix, prompt_ids=prompt_ids, **task.pattern_options)
    served = served_prompt_tokens(schedule.models, schedule.prompt_ids, counts) if counts \
        else None

    def replay(number: int) -> tuple[SimOutcome, list[dict[str, Any]], list[dict[str, Any]]]:
        """The arrivals replayed with jitter seed ``number`` (0: the run written), and its rows."""
        outcome = simulate(schedule, make_strategy(point.strategy, **task.strategy_options),
                           task.profiles, point.sla_s, task.max_new_tokens, task.duration_s,
                           task.drain_timeout_s, seed=seed, jitter=task.jitter,
                           rate_window_s=task.rate_window_s, max_queue=task.max_queue,
                           served_tokens=served, replay=number)
        return (outcome, [r.row() for r in outcome.requests],
                [as_row(b) for b in outcome.batches])

    outcome, request_rows, batch_rows = replay(0)
    task.run_dir.mkdir(parents=True, exist_ok=True)
    schedule.write_csv(task.run_dir / "schedule.csv")
    recorder = RunRecorder(task.run_dir, flush_each_row=False)
    recorder.requests.write_many(request_rows)
    recorder.batches.write_many(batch_rows)
    recorder.close()
    bound = sla_attainment_bound(schedule.scheduled_s, schedule.models, point.sla_s,
                                 task.profiles, task.max_new_tokens)
    batches = pd.DataFrame(batch_rows, columns=BATCH_COLUMNS)
    requests = pd.DataFrame(request_rows, columns=REQUEST_COLUMNS)
    written = {"sla_attainment_bound": bound, "server_time_per_batch_s": 0.0,
               **profile_fit(batches, task.profiles, task.max_new_tokens, requests)}
    summary = run_metrics(requests, batches,
                          outcome.traffic_window_s, written=written)
    replayed = [summary]
    for number in range(1, task.replay_count()):
        again, again_requests, again_batches = replay(number)
        replayed.append(run_metrics(pd.DataFrame(again_requests, columns=REQUEST_COLUMNS),
                                    pd.DataFrame(again_batches, columns=BATCH_COLUMNS),
                                    again.traffic_window_s))
    run = {
        "run_id": point.run_id,
        "status": "complete",
        "params": {**task.params(), "pattern_params": schedule.params},
        "environment": {"cc_mode": task.profiles.cc_mode, "simulated": True,
                        "device": task.profiles.device, "dtype": task.profiles.dtype,
                        "python": platform.python_version(), "numpy": np.__version__},
        "accounting": outcome.accounting,
        "traffic_window_s": outcome.traffic_window_s,
        "run_time_s": outcome.run_time_s,
        "summary": summary,
        "replays": replay_spread(replayed),
    }
    write_json_atomic(task.run_dir / "run.json", with_identity(run))
    return run
