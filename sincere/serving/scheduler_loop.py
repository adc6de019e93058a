"""The scheduler thread: the one thread that asks the strategy, swaps models and runs batches.

It waits on the run's condition until the strategy (the same objects the simulator calls, on
the real clock) sends a batch, settles at once the requests the strategy sheds, swaps the model
in when another is resident and runs the batch through the engine; each request of the batch is
then recorded and answered. A model that fails to load fails its batch and is marked broken
(``sincere.serving.model_registry``); an error in a batch fails that batch's requests and the
thread goes on; an error of the thread itself ends the run as failed. The drain is over when
the queues are empty and no straggler is expected (``sincere.serving.admission``), or at the
drain timeout; then ``on_end`` writes the run (``sincere.serving.run_record``).

It also measures the server's own time between batches (``sincere.runs.fidelity``) and its
CPU and wall time inside engine calls.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from sincere.runs.records import BatchRecord, served
from sincere.scheduling.queues import Request
from sincere.scheduling.view import Decision
from sincere.serving.admission import Admission
from sincere.serving.model_registry import ModelRegistry
from sincere.serving.run_state import RunSetup, RunState
from sincere.serving.settling import SHED_ERROR, Settler

log = logging.getLogger("sincere.serving")


class SchedulerLoop:
    """The scheduler thread of one run; ``on_end`` runs on it once the drain is over."""

    def __init__(self, setup: RunSetup, state: RunState, settler: Settler,
                 admission: Admission, registry: ModelRegistry,
                 on_end: Callable[[], None]) -> None:
        self.setup = setup
        self.state = state
        self.settler = settler
        self.admission = admission
        self.registry = registry
        self._on_end = on_end
        self._batch_ids = itertools.count()
        self.busy_model: str | None = None  # the model of the batch running
        self.last_end_s = 0.0
        # The server's own time between batches (sincere.runs.fidelity): scheduling, records, GIL.
        self._waiting_for_s: float | None = None
        self.server_time_s = 0.0
        # CPU seconds of the scheduler thread inside engine calls, and their wall time: with one
        # torch thread on a CPU, the process's CPU time less these is the server's own work
        # (HTTP, queues, records, monitor), as benchmarks/bench_server_overhead.py reports.
        self.engine_cpu_s = 0.0
        self.engine_wall_s = 0.0
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
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
                            self.settler.settle(request, "failed", error=type(exc).__name__)
                finally:
                    self.busy_model = None
        except Exception as exc:  # noqa: BLE001 - never leave callers waiting forever
            log.error("scheduler stopped by %s; the run ends here", type(exc).__name__)
            self.state.fail(f"scheduler error: {type(exc).__name__}")
        finally:
            self._on_end()

    def _drain_over(self, now: float) -> bool:
        if now >= self.state.drain_deadline_s:
            return True
        return self.state.book.total() == 0 and not self.admission.expecting_stragglers(now)

    def _next_batch(self) -> tuple[Decision, list[Request]] | None:
        """Wait until the strategy sends a batch; None once the drain is over. Requests the
        strategy sheds on the way are settled at once."""
        state, setup = self.state, self.setup
        while True:
            hopeless: list[Request] = []
            with state.cond:
                self.registry.unload_removed()
                now = state.now()
                if state.draining and self._drain_over(now):
                    return None
                if not state.begun:  # nothing can be queued before the run begins
                    state.cond.wait()
                    continue
                decision = setup.strategy.decide(state.book.view(
                    now, setup.engine.resident, setup.profiles, setup.sla_s,
                    setup.max_new_tokens, state.draining))
                for model, count in decision.shed:
                    hopeless.extend(state.book.take(model, count))
                if decision.runs:
                    self.busy_model = decision.model
                    work = decision, state.book.take(decision.model, decision.size)
                    self._note_decision_lag(now)
                elif not hopeless:
                    self._waiting_for_s = decision.wake_at
                    wait_s = math.inf if decision.wake_at is None else decision.wake_at - now
                    if state.draining:
                        wait_s = min(wait_s, state.drain_deadline_s - now,
                                     max(state.straggler_deadline_s - now, 0.0))
                    state.cond.wait(None if math.isinf(wait_s) else max(wait_s, 0.0))
                    continue
            for request in hopeless:
                self.settler.settle(request, "shed", error=SHED_ERROR, http_status=503)
            if decision.runs:
                return work

    def _note_decision_lag(self, now: float) -> None:
        """The server's own delay before a batch: from the event that made it due (the last
        batch's end, the latest arrival, or the timer it waited for) to now."""
        due_s = max(self.last_end_s, self.admission.last_arrival_s)
        if self._waiting_for_s is not None and self._waiting_for_s <= now:
            due_s = max(due_s, self._waiting_for_s)
        self._waiting_for_s = None
        self.server_time_s += max(0.0, now - due_s)

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
        engine, now = self.setup.engine, self.state.now
        model = decision.model
        dispatch_s = now()
        previous = engine.resident
        if previous != model:
            try:
                with self._in_engine():
                    engine.swap(model)  # one call: unload the resident model, load this one
            except Exception as exc:  # noqa: BLE001 - a model that fails to load fails its batch
                reason = type(exc).__name__
                log.error("loading %s failed: %s", model, reason)
                # The attempt was a swap (the resident model is gone, the time is spent): it is
                # recorded as a batch that swapped and processed nothing.
                failed_s = now()
                self.settler.record_batch(BatchRecord(
                    batch_id=next(self._batch_ids), model=model, batch_size=len(requests),
                    reason=decision.reason, dispatch_s=dispatch_s, swap_from=previous,
                    swap_s=failed_s - dispatch_s, start_s=failed_s, end_s=failed_s,
                    processing_s=0.0, output_tokens=0))
                self.last_end_s = failed_s
                for request in requests:
                    self.settler.settle(request, "failed", error=f"model {model!r} could not "
                                                                 f"be loaded ({reason})")
                self.registry.mark_broken(model, reason)
                return
        start_s = now()
        if previous == model:
            self.server_time_s += start_s - dispatch_s  # no swap: all of it is the server's
        with self._in_engine():
            result = engine.generate([r.payload.prompt for r in requests],
                                     self.setup.max_new_tokens)
        end_s = now()
        failed = set(result.failed)
        batch = BatchRecord(
            batch_id=next(self._batch_ids), model=model, batch_size=len(requests),
            reason=decision.reason, dispatch_s=dispatch_s,
            swap_from=previous if previous != model else None, swap_s=start_s - dispatch_s,
            start_s=start_s, end_s=end_s, processing_s=end_s - start_s,
            output_tokens=sum(t for i, t in enumerate(result.output_tokens) if i not in failed),
            retries=result.retries)
        self.settler.record_batch(batch)
        self.last_end_s = end_s
        errors = dict(zip(result.failed, result.errors, strict=False))
        for i, request in enumerate(requests):
            status = "failed" if i in failed else "ok"
            record = served(request, batch, self.setup.sla_s, status=status,
                            output_tokens=result.output_tokens[i],
                            prompt_tokens=result.prompt_tokens[i])
            self.settler.record(record)
            request.payload.text = result.texts[i] if status == "ok" else ""
            self.settler.answer(request, record, error=errors.get(i))
