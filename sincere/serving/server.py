"""The experiment server's core: request intake, the scheduler thread that owns the GPU, records.

Request threads only validate, enqueue and wait; one scheduler thread asks the strategy (the same
objects the simulator calls, on the real clock), swaps models and runs batches through the
engine, and settles every request with a status. The HTTP layer is in ``sincere.serving.app``.
Prompts and generated texts live only in memory, on their way to and from the caller.

The run's clock starts at ``begin()`` (the generator's ``POST /start``, or the first request),
so that arrival times line up with the generator's schedule. ``stop()`` ends the traffic: the
queues drain (SPEC section 4), requests the generator issued before it stopped but that are
still on their way are let in for a short grace, and what is left at the drain timeout is
``unserved``. Every request received ends in requests.csv with a status.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sincere.files import write_json_atomic
from sincere.profiles.profile_set import ProfileSet
from sincere.runs.fidelity import profile_fit
from sincere.runs.identity import with_identity
from sincere.runs.metrics import run_metrics
from sincere.runs.records import (
    BatchRecord,
    RequestRecord,
    RunRecorder,
    served,
    settled,
)
from sincere.scheduling.bound import sla_attainment_bound
from sincere.scheduling.queues import QueueBook, Request
from sincere.scheduling.strategies import Strategy
from sincere.scheduling.view import Decision

log = logging.getLogger("sincere.serving")

STRAGGLER_GRACE_S = 10.0  # after /stop, how long requests issued before it may still arrive


class Refused(Exception):
    """A request the server will not queue: an HTTP status and a message for the caller."""

    def __init__(self, http_status: int, message: str, retry_after_s: int | None = None,
                 status: str = "rejected"):
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.retry_after_s = retry_after_s
        self.status = status  # recorded as: rejected, or failed (the server's fault)


@dataclass(eq=False)
class Pending:
    """What a request thread waits on; the scheduler thread fills ``outcome`` and sets ``done``."""

    prompt: str = field(repr=False)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] = field(default_factory=dict, repr=False)
    text: str = field(default="", repr=False)


# HTTP status a waiting caller gets for each final status of a request that was queued.
HTTP_STATUS = {"ok": 200, "failed": 500, "unserved": 503, "shed": 503}
SHED_ERROR = ("shed: the request can no longer complete within its SLA, even if its batch "
              "started now (SHED_LATE)")
DEFAULT_ERRORS = {"unserved": "not served before the drain timeout", "failed": "the batch failed"}
OUTCOME_FIELDS = ("request_id", "model", "status", "batch_id", "batch_size", "queue_wait_s",
                  "swap_wait_s", "processing_s", "latency_s", "sla_met", "prompt_tokens",
                  "output_tokens")


class ExperimentServer:
    """One run: queues, the strategy, the engine, the records and the monitor.

    ``monitor_factory(start_monotonic)`` makes the run's monitor when the run begins, so that
    its ``t_s`` shares the run's clock.
    """

    def __init__(self, engine: Any, profiles: ProfileSet, strategy: Strategy, sla_s: float,
                 max_new_tokens: int, run_dir: Path, models: list[str],
                 drain_timeout_s: float = 600.0, max_queue: int = 100_000,
                 rate_window_s: float = 60.0,
                 monitor_factory: Callable[[float], Any] | None = None,
                 params: dict[str, Any] | None = None,
                 environment: dict[str, Any] | None = None,
                 straggler_grace_s: float = STRAGGLER_GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for model in models:
            profiles[model]  # a model without a profile cannot be scheduled: refuse up front
        self.engine = engine
        self.profiles = profiles
        self.strategy = strategy
        self.sla_s = sla_s
        self.max_new_tokens = max_new_tokens
        self.run_dir = run_dir
        self.drain_timeout_s = drain_timeout_s
        self.max_queue = max_queue
        self.monitor_factory = monitor_factory
        self.monitor: Any = None
        self.params = dict(params or {})
        self.environment = environment or {}
        self.straggler_grace_s = straggler_grace_s
        self._clock = clock
        self._start: float | None = None
        self.started_epoch_s: float | None = None
        self.book = QueueBook(models, rate_window_s=rate_window_s)
        self.recorder = RunRecorder(run_dir)
        self._cond = threading.Condition()
        self._record_lock = threading.Lock()
        self._ids = itertools.count()
        self._batch_ids = itertools.count()
        self._seen_ids: set[str] = set()
        self._counts = {"received": 0, "ok": 0, "rejected": 0, "failed": 0, "unserved": 0,
                        "shed": 0}
        self._removed: set[str] = set()
        self._broken: dict[str, str] = {}  # model -> why it could not be loaded
        self.failure: str | None = None  # why the run ended early, if it did
        self._to_unload: str | None = None
        self._draining = False
        self._drain_deadline_s = math.inf
        self._issued: int | None = None  # what the generator says it sent, from stop()
        self._straggler_deadline_s = math.inf
        self._finished = threading.Event()
        self._intake_closed = False
        self._end_status = "complete"
        self._busy_model: str | None = None
        self.last_end_s = 0.0
        self.traffic_end_s: float | None = None  # when stop() came
        # The server's own time between batches (sincere.runs.fidelity): scheduling, records, GIL.
        self._last_arrival_s = 0.0
        self._waiting_for_s: float | None = None
        self.server_time_s = 0.0
        # Fixed when the run finishes (the drain is over): a request refused afterwards is
        # recorded and counted, but changes no duration, rate or fraction.
        self.run_time_s: float | None = None
        # CPU seconds of the whole process over the run, and of the scheduler thread inside
        # engine calls: with one torch thread on a CPU, their difference is the server's own
        # work (HTTP, queues, records, monitor), as benchmarks/bench_server_overhead.py reports.
        self._process_cpu_at_begin_s = 0.0
        self.process_cpu_s = 0.0
        self.engine_cpu_s = 0.0
        self.engine_wall_s = 0.0
        self.run_json: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._scheduler_loop, name="scheduler",
                                        daemon=True)

    # --- time ---------------------------------------------------------------------------------
    def begin(self, params: dict[str, Any] | None = None) -> bool:
        """Start the run's clock and monitor (once); ``params`` (the generator's schedule
        parameters) go into run.json. False when the run had already begun."""
        with self._cond:
            if params:
                self.params.update(params)
            if self._start is not None:
                return False
            self._start = self._clock()
            self.started_epoch_s = time.time()
            self._process_cpu_at_begin_s = time.process_time()
        if self.monitor_factory is not None:
            self.monitor = self.monitor_factory(self._start)
            self.monitor.start()
        log.info("run %s begins", self.run_dir.name)
        return True

    def now(self) -> float:
        """Seconds since the run began, on the monotonic clock (0 before it begins)."""
        return 0.0 if self._start is None else self._clock() - self._start

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> ExperimentServer:
        """Start the scheduler thread (the run's clock starts with ``begin``)."""
        self._thread.start()
        return self

    def stop(self, issued: int | None = None, params: dict[str, Any] | None = None,
             timeout_s: float | None = None) -> dict[str, Any]:
        """No more traffic: drain, write run.json, and return it. ``issued`` is how many
        requests the generator sent; until that many have arrived (or a short grace passes)
        late ones are still let in. Safe to call twice; waits at most ``timeout_s``."""
        self.begin(params)
        with self._cond:
            if not self._draining:
                self._draining = True
                now = self.now()
                self._drain_deadline_s = now + self.drain_timeout_s
                self._straggler_deadline_s = now + self.straggler_grace_s
                self._issued = issued
                self.traffic_end_s = now
                log.info("stop: draining %d queued requests (timeout %.0f s)",
                         self.book.total(), self.drain_timeout_s)
            self._cond.notify_all()
        self._finished.wait(timeout_s)
        return self.run_json or {}

    def abort(self, reason: str = "interrupted") -> None:
        """End the run now (SIGTERM, Ctrl-C): no batch starts after the one running, what is
        queued is recorded as unserved, and run.json says ``reason`` instead of complete."""
        with self._cond:
            if self._finished.is_set():
                return
            self._end_status = reason
            self._draining = True
            self._drain_deadline_s = -math.inf
            self._cond.notify_all()

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        """Wait until run.json is written; False on timeout."""
        return self._finished.wait(timeout_s)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def draining(self) -> bool:
        return self._draining

    # --- intake -------------------------------------------------------------------------------
    def new_request_id(self, wanted: str | None = None) -> str | None:
        """The caller's id when given and new (None when it was used before), else a server id;
        ids are unique within the run."""
        with self._record_lock:
            if wanted is not None:
                if wanted in self._seen_ids:
                    return None
                self._seen_ids.add(wanted)
                return wanted
            while True:
                request_id = f"s{next(self._ids):06d}"
                if request_id not in self._seen_ids:
                    self._seen_ids.add(request_id)
                    return request_id

    def reject(self, request_id: str, model: str, prompt_tokens: int | None = None) -> None:
        """Record a request that was refused on arrival (bad input); before the run begins its
        arrival is 0."""
        request = Request(request_id, model, self.now(), math.nan, prompt_tokens)
        self._settle(request, "rejected", on_arrival=True)

    def submit(self, request_id: str, model: str, prompt: str) -> Pending:
        """Queue a validated request, or raise Refused (and record it as rejected)."""
        self.begin()
        pending = Pending(prompt)
        with self._cond:
            arrival_s = self.now()
            request = Request(request_id, model, arrival_s, arrival_s + self.sla_s,
                              payload=pending)
            refusal = self._refusal(model)
            if refusal is None:
                self.book.add(request)
                self._last_arrival_s = arrival_s
                with self._record_lock:
                    self._counts["received"] += 1
                self._cond.notify_all()
                return pending
        self._settle(request, refusal.status, error=refusal.message, on_arrival=True)
        raise refusal

    def _expecting_stragglers(self, now: float) -> bool:
        """After stop: requests the generator issued may still be on their way."""
        with self._record_lock:
            received = self._counts["received"]
        return (self._issued is not None and received < self._issued
                and now < self._straggler_deadline_s)

    def _refusal(self, model: str) -> Refused | None:
        if self._intake_closed or (self._draining
                                   and not self._expecting_stragglers(self.now())):
            return Refused(503, "the run is over: the server is draining after /stop and takes "
                                "no new requests")
        if model in self._removed:
            return Refused(410, f"model {model!r} was removed from this server")
        if model in self._broken:
            return Refused(503, f"model {model!r} could not be loaded "
                                f"({self._broken[model]}); its requests fail until it is "
                                f"added again (POST /models)", status="failed")
        if model not in self.book.models:
            known = ", ".join(sorted(self.book.models)) or "none"
            return Refused(404, f"unknown model_alias {model!r}; served models: {known}")
        if self.book.total() >= self.max_queue:
            return Refused(429, f"queue full ({self.max_queue} requests waiting); retry later",
                           retry_after_s=max(1, math.ceil(self.sla_s / 10)))
        return None

    # --- models -------------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        """The models served now."""
        with self._cond:
            return sorted(self.book.models)

    @property
    def removed_models(self) -> list[str]:
        with self._cond:
            return sorted(self._removed)

    @property
    def broken_models(self) -> dict[str, str]:
        """Models that failed to load, and why."""
        with self._cond:
            return dict(self._broken)

    def add_model(self, model: str) -> None:
        """Serve another model (its profile must be in the profile set); a model that failed
        to load is tried again."""
        self.profiles[model]
        with self._cond:
            self._removed.discard(model)
            self._broken.pop(model, None)
            self.book.add_model(model)
            self._cond.notify_all()

    def mark_broken(self, model: str, reason: str) -> None:
        """``model`` cannot be loaded: its queued requests fail now, later ones on arrival,
        and it is not tried again unless added again (the other models go on)."""
        with self._cond:
            self._broken[model] = reason
            left = self.book.take(model, self.book.length(model))
        for request in left:
            self._settle(request, "failed", error=f"model {model!r} could not be loaded "
                                                  f"({reason})")
        log.error("model %s marked as not loadable (%s); %d queued requests failed", model,
                  reason, len(left))

    def remove_model(self, model: str) -> int:
        """Stop serving a model: its queued requests end as failed (410 for the caller), and it
        is not loaded again. Returns how many queued requests it had."""
        with self._cond:
            if model not in self.book.models:
                raise KeyError(model)
            left = self.book.remove_model(model)
            self._removed.add(model)
            self._to_unload = model
            self._cond.notify_all()
        for request in left:
            self._settle(request, "failed", error=f"model {model!r} was removed",
                         http_status=410)
        log.info("model %s removed; %d queued requests failed", model, len(left))
        return len(left)

    def status(self) -> dict[str, Any]:
        with self._cond:
            queues = {m: self.book.length(m) for m in self.book.models}
        with self._record_lock:
            counts = dict(self._counts)
        return {"resident": self.engine.resident, "running": self._busy_model,
                "queues": queues, "counts": counts, "draining": self._draining,
                "finished": self.finished, "now_s": round(self.now(), 3),
                "begun": self._start is not None, "strategy": self.strategy.name,
                "sla_s": self.sla_s, "removed_models": sorted(self._removed),
                "broken_models": self.broken_models}

    # --- the scheduler thread -----------------------------------------------------------------
    def _scheduler_loop(self) -> None:
        try:
            while True:
                work = self._next_batch()
                if work is None:
                    break
                decision, requests = work
                try:
                    self._run_batch(decision, requests)
                except Exception as exc:  # noqa: BLE001 - the thread must go on whatever happens
                    log.error("batch of %d for %s failed: %s", len(requests), decision.model,
                              type(exc).__name__)
                    for request in requests:
                        if not request.payload.done.is_set():
                            self._settle(request, "failed", error=type(exc).__name__)
                finally:
                    self._busy_model = None
        except Exception as exc:  # noqa: BLE001 - never leave callers waiting forever
            log.error("scheduler stopped by %s; the run ends here", type(exc).__name__)
            self._end_status = "failed"
            self.failure = f"scheduler error: {type(exc).__name__}"
        finally:
            self._finish()

    def _drain_over(self, now: float) -> bool:
        if now >= self._drain_deadline_s:
            return True
        return self.book.total() == 0 and not self._expecting_stragglers(now)

    def _next_batch(self) -> tuple[Decision, list[Request]] | None:
        """Wait until the strategy sends a batch; None once the drain is over. Requests the
        strategy sheds on the way are settled at once."""
        while True:
            hopeless: list[Request] = []
            with self._cond:
                self._unload_removed()
                now = self.now()
                if self._draining and self._drain_over(now):
                    return None
                if self._start is None:  # nothing can be queued before the run begins
                    self._cond.wait()
                    continue
                decision = self.strategy.decide(self.book.view(
                    now, self.engine.resident, self.profiles, self.sla_s, self.max_new_tokens,
                    self._draining))
                for model, count in decision.shed:
                    hopeless.extend(self.book.take(model, count))
                if decision.runs:
                    self._busy_model = decision.model
                    work = decision, self.book.take(decision.model, decision.size)
                    self._note_decision_lag(now)
                elif not hopeless:
                    self._waiting_for_s = decision.wake_at
                    wait_s = math.inf if decision.wake_at is None else decision.wake_at - now
                    if self._draining:
                        wait_s = min(wait_s, self._drain_deadline_s - now,
                                     max(self._straggler_deadline_s - now, 0.0))
                    self._cond.wait(None if math.isinf(wait_s) else max(wait_s, 0.0))
                    continue
            for request in hopeless:
                self._settle(request, "shed", error=SHED_ERROR, http_status=503)
            if decision.runs:
                return work

    def _note_decision_lag(self, now: float) -> None:
        """The server's own delay before a batch: from the event that made it due (the last
        batch's end, the latest arrival, or the timer it waited for) to now."""
        due_s = max(self.last_end_s, self._last_arrival_s)
        if self._waiting_for_s is not None and self._waiting_for_s <= now:
            due_s = max(due_s, self._waiting_for_s)
        self._waiting_for_s = None
        self.server_time_s += max(0.0, now - due_s)

    def _unload_removed(self) -> None:
        if self._to_unload is None:
            return
        model, self._to_unload = self._to_unload, None
        if self.engine.resident == model:
            self.engine.unload()
        self.engine.evict(model)

    @contextlib.contextmanager
    def _in_engine(self) -> Iterator[None]:
        """Count the scheduler thread's CPU and wall time inside an engine call."""
        cpu_s, wall_s = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            self.engine_cpu_s += time.thread_time() - cpu_s
            self.engine_wall_s += time.perf_counter() - wall_s

    def _run_batch(self, decision: Decision, requests: list[Request]) -> None:
        model = decision.model
        dispatch_s = self.now()
        previous = self.engine.resident
        if previous != model:
            try:
                with self._in_engine():
                    self.engine.swap(model)  # one call: unload the resident model, load this
            except Exception as exc:  # noqa: BLE001 - a model that fails to load fails its batch
                reason = type(exc).__name__
                log.error("loading %s failed: %s", model, reason)
                # The attempt was a swap (the resident model is gone, the time is spent): it is
                # recorded as a batch that swapped and processed nothing.
                failed_s = self.now()
                with self._record_lock:
                    self.recorder.batch(BatchRecord(
                        batch_id=next(self._batch_ids), model=model, batch_size=len(requests),
                        reason=decision.reason, dispatch_s=dispatch_s, swap_from=previous,
                        swap_s=failed_s - dispatch_s, start_s=failed_s, end_s=failed_s,
                        processing_s=0.0, output_tokens=0))
                self.last_end_s = failed_s
                for request in requests:
                    self._settle(request, "failed", error=f"model {model!r} could not be "
                                                          f"loaded ({reason})")
                self.mark_broken(model, reason)
                return
        start_s = self.now()
        if previous == model:
            self.server_time_s += start_s - dispatch_s  # no swap: all of it is the server's
        with self._in_engine():
            result = self.engine.generate([r.payload.prompt for r in requests],
                                          self.max_new_tokens)
        end_s = self.now()
        failed = set(result.failed)
        batch = BatchRecord(
            batch_id=next(self._batch_ids), model=model, batch_size=len(requests),
            reason=decision.reason, dispatch_s=dispatch_s,
            swap_from=previous if previous != model else None, swap_s=start_s - dispatch_s,
            start_s=start_s, end_s=end_s, processing_s=end_s - start_s,
            output_tokens=sum(t for i, t in enumerate(result.output_tokens) if i not in failed),
            retries=result.retries)
        with self._record_lock:
            self.recorder.batch(batch)
        self.last_end_s = end_s
        errors = dict(zip(result.failed, result.errors, strict=False))
        for i, request in enumerate(requests):
            status = "failed" if i in failed else "ok"
            record = served(request, batch, self.sla_s, status=status,
                            output_tokens=result.output_tokens[i],
                            prompt_tokens=result.prompt_tokens[i])
            self._record(record)
            request.payload.text = result.texts[i] if status == "ok" else ""
            self._answer(request, record, error=errors.get(i))

    # --- settling -----------------------------------------------------------------------------
    def _settle(self, request: Request, status: str, error: str | None = None,
                http_status: int | None = None, on_arrival: bool = False) -> None:
        """Record a request that never ran; ``on_arrival``: it was refused as it came in (so
        it was never counted as received by being queued)."""
        record = settled(request, status, self.sla_s)
        self._record(record, on_arrival)
        if request.payload is not None:
            self._answer(request, record, error=error, http_status=http_status)

    def _record(self, record: RequestRecord, on_arrival: bool = False) -> None:
        with self._record_lock:
            if self.recorder.requests.closed:  # after close(): nothing can be recorded now
                log.error("request refused after the records were closed: not recorded")
                return
            self.recorder.request(record)
            self._counts[record.status] += 1
            if on_arrival:  # a queued request was counted when it was queued
                self._counts["received"] += 1

    def _answer(self, request: Request, record: RequestRecord, error: str | None = None,
                http_status: int | None = None) -> None:
        row = record.row()
        outcome = {k: row[k] for k in OUTCOME_FIELDS}
        outcome["http_status"] = http_status or HTTP_STATUS.get(record.status, 500)
        if error or record.status != "ok":
            outcome["error"] = error or DEFAULT_ERRORS.get(record.status, record.status)
        request.payload.outcome = outcome
        request.payload.done.set()

    def _finish(self) -> None:
        """After the drain: intake closes, what is still queued is unserved; write run.json."""
        with self._cond:
            self._intake_closed = True  # from here on every request is refused (and recorded)
            left = self.book.take_all()
        for request in left:
            self._settle(request, "unserved")
        self.run_time_s = max(self.now(), self.last_end_s)
        self.process_cpu_s = time.process_time() - self._process_cpu_at_begin_s
        if self.monitor is not None:
            self.monitor.stop()
        self.run_json = self._run_json()
        write_json_atomic(self.run_dir / "run.json", self.run_json)
        log.info("run finished: %s", self.run_json["accounting"])
        self._finished.set()

    def close(self) -> None:
        """Close requests.csv and batches.csv. Requests refused once intake had closed are in
        requests.csv too; when run.json was written without them, it is written again."""
        with self._record_lock:
            self.recorder.close()
        if self.run_json is not None and self.run_json["accounting"] != self.accounting():
            self.run_json = self._run_json()
            write_json_atomic(self.run_dir / "run.json", self.run_json)
            log.info("requests refused after the run ended; run.json updated: %s",
                     self.run_json["accounting"])

    def accounting(self) -> dict[str, int | None]:
        """issued (as the generator said), received, completed, rejected, failed, unserved,
        shed."""
        with self._record_lock:
            counts = dict(self._counts)
        return {"issued": self._issued, "received": counts["received"],
                "completed": counts["ok"], "rejected": counts["rejected"],
                "failed": counts["failed"], "unserved": counts["unserved"],
                "shed": counts["shed"]}

    def traffic_window_s(self) -> float:
        """The traffic window: the generator's duration when it gave a finite one, else until
        /stop came (a whole trace replayed), else the run time (a run that was aborted)."""
        duration_s = self.params.get("duration_s")
        if isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0:
            return float(duration_s)
        if self.traffic_end_s is not None:
            return self.traffic_end_s
        return self.run_time_s if self.run_time_s is not None else self.now()

    def _written(self, requests: pd.DataFrame, batches: pd.DataFrame) -> dict[str, Any]:
        """The summary figures only the server can compute: the SLA-attainment bound on the
        arrivals received (`sincere.scheduling.bound`; over every issued request, so requests never
        received count as misses there too), the fit to the profile and its own time."""
        served = requests[requests["model"].isin(self.profiles.models)]
        issued = max(len(requests), self._issued or 0)
        bound = None if served.empty or not issued else sla_attainment_bound(
            served["arrival_s"].to_numpy(float), served["model"].astype(str).tolist(),
            self.sla_s, self.profiles, self.max_new_tokens, issued=issued)
        return {"sla_attainment_bound": bound,
                "server_time_per_batch_s": self.server_time_s / len(batches) if len(batches)
                else None,
                **profile_fit(batches, self.profiles, self.max_new_tokens, requests)}

    def _run_json(self) -> dict[str, Any]:
        run_time_s = self.run_time_s if self.run_time_s is not None else max(self.now(),
                                                                             self.last_end_s)
        window_s = self.traffic_window_s()
        accounting = self.accounting()  # first: the rows read next hold at least these
        requests = pd.read_csv(self.run_dir / "requests.csv")
        batches = pd.read_csv(self.run_dir / "batches.csv")
        monitor_path = self.run_dir / "monitor.csv"
        monitor = pd.read_csv(monitor_path) if monitor_path.is_file() else None
        return with_identity({
            "run_id": self.run_dir.name, "status": self._end_status,
            "params": {**self.params, "strategy": self.strategy.name, "sla_s": self.sla_s,
                       "max_new_tokens": self.max_new_tokens, "engine": "hf",
                       "models": sorted(self.book.models) + sorted(self._removed),
                       "removed_models": sorted(self._removed),
                       "strategy_params": self.strategy.params(),
                       "drain_timeout_s": self.drain_timeout_s, "max_queue": self.max_queue},
            "failure": self.failure, "broken_models": self.broken_models,
            "environment": self.environment, "accounting": accounting,
            "started_epoch_s": self.started_epoch_s, "traffic_end_s": self.traffic_end_s,
            "traffic_window_s": window_s, "run_time_s": run_time_s,
            "server_cpu": {"process_cpu_s": round(self.process_cpu_s, 4),
                           "engine_cpu_s": round(self.engine_cpu_s, 4),
                           "engine_wall_s": round(self.engine_wall_s, 4)},
            "compile_counts": getattr(self.engine, "compile_counts", dict)(),
            "summary": run_metrics(requests, batches, window_s, monitor, issued=self._issued,
                                   written=self._written(requests, batches)),
        })
