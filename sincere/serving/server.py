"""The experiment server's core: one run's intake, scheduler thread, records and run.json.

Request threads only validate, enqueue and wait; one scheduler thread asks the strategy (the same
objects the simulator calls, on the real clock), swaps models and runs batches through the
engine, and settles every request with a status. The HTTP layer is in ``sincere.serving.app``.
Prompts and generated texts live only in memory, on their way to and from the caller.

The run's clock starts at ``begin()`` (the generator's ``POST /start``, or the first request),
so that arrival times line up with the generator's schedule. ``stop()`` ends the traffic: the
queues drain (SPEC section 4), requests the generator issued before it stopped but that are
still on their way are let in for a short grace, and what is left at the drain timeout is
``unserved``. Every request received ends in requests.csv with a status.

``ExperimentServer`` is the one object the app, the tests and the benchmarks use; its parts,
each on its own: the run's clock, queues and phase (``sincere.serving.run_state``), admission
(``admission``: ids, refusals, stragglers), the model registry (``model_registry``), the
scheduler thread (``scheduler_loop``), settling (``settling``: requests.csv, batches.csv, the
counts) and the run record (``run_record``: run.json).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sincere.profiles.profile_set import ProfileSet
from sincere.scheduling.strategies import Strategy
from sincere.serving.admission import STRAGGLER_GRACE_S, Admission, Pending
from sincere.serving.model_registry import ModelRegistry
from sincere.serving.run_record import RunRecord
from sincere.serving.run_state import RunSetup, RunState
from sincere.serving.scheduler_loop import SchedulerLoop
from sincere.serving.settling import Settler

log = logging.getLogger("sincere.serving")


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
        self.setup = RunSetup(engine, profiles, strategy, sla_s, max_new_tokens, run_dir,
                              drain_timeout_s, max_queue, straggler_grace_s)
        # What the app, the tests and the benchmarks read of the setup, by name.
        self.engine, self.profiles, self.strategy = engine, profiles, strategy
        self.sla_s, self.max_new_tokens, self.run_dir = sla_s, max_new_tokens, run_dir
        self.monitor_factory = monitor_factory
        self.monitor: Any = None
        self.state = RunState(models, rate_window_s, clock)
        self.settler = Settler(run_dir, sla_s)
        self.registry = ModelRegistry(self.setup, self.state, self.settler)
        self.admission = Admission(self.setup, self.state, self.settler, self.registry)
        self.loop = SchedulerLoop(self.setup, self.state, self.settler, self.admission,
                                  self.registry, on_end=self._finish)
        self.record = RunRecord(self.setup, self.state, self.settler, self.registry, self.loop,
                                params, environment)

    # --- time ---------------------------------------------------------------------------------
    def begin(self, params: dict[str, Any] | None = None) -> bool:
        """Start the run's clock and monitor (once); ``params`` (the generator's schedule
        parameters) go into run.json. False when the run had already begun."""
        with self.state.cond:
            if params:
                self.record.params.update(params)
            if not self.state.begin():
                return False
        if self.monitor_factory is not None:
            self.monitor = self.monitor_factory(self.state.start)
            self.monitor.start()
        log.info("run %s begins", self.run_dir.name)
        return True

    def now(self) -> float:
        """Seconds since the run began, on the monotonic clock (0 before it begins)."""
        return self.state.now()

    @property
    def started_epoch_s(self) -> float | None:
        return self.state.started_epoch_s

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> ExperimentServer:
        """Start the scheduler thread (the run's clock starts with ``begin``)."""
        self.loop.start()
        return self

    def stop(self, issued: int | None = None, params: dict[str, Any] | None = None,
             timeout_s: float | None = None) -> dict[str, Any]:
        """No more traffic: drain, write run.json, and return it. ``issued`` is how many
        requests the generator sent; until that many have arrived (or a short grace passes)
        late ones are still let in. Safe to call twice; waits at most ``timeout_s``."""
        self.begin(params)
        setup = self.setup
        with self.state.cond:
            if self.state.end_traffic(issued, setup.drain_timeout_s, setup.straggler_grace_s):
                log.info("stop: draining %d queued requests (timeout %.0f s)",
                         self.state.book.total(), setup.drain_timeout_s)
            self.state.cond.notify_all()
        self.state.finished.wait(timeout_s)
        return self.run_json or {}

    def abort(self, reason: str = "interrupted") -> None:
        """End the run now (SIGTERM, Ctrl-C): no batch starts after the one running, what is
        queued is recorded as unserved, and run.json says ``reason`` instead of complete."""
        with self.state.cond:
            if self.state.finished.is_set():
                return
            self.state.abort(reason)
            self.state.cond.notify_all()

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        """Wait until run.json is written; False on timeout."""
        return self.state.finished.wait(timeout_s)

    @property
    def finished(self) -> bool:
        return self.state.finished.is_set()

    @property
    def draining(self) -> bool:
        return self.state.draining

    # --- intake (sincere.serving.admission) ---------------------------------------------------
    def new_request_id(self, wanted: str | None = None) -> str | None:
        """The caller's id when given and new (None when it was used before), else a server id;
        ids are unique within the run."""
        return self.admission.new_request_id(wanted)

    def reject(self, request_id: str, model: str, prompt_tokens: int | None = None) -> None:
        """Record a request that was refused on arrival (bad input)."""
        self.admission.reject(request_id, model, prompt_tokens)

    def submit(self, request_id: str, model: str, prompt: str) -> Pending:
        """Queue a validated request (the run begins now if it has not), or raise Refused
        (and record it as rejected)."""
        self.begin()
        return self.admission.submit(request_id, model, prompt)

    # --- models (sincere.serving.model_registry) ----------------------------------------------
    @property
    def models(self) -> list[str]:
        """The models served now."""
        return self.registry.models()

    @property
    def removed_models(self) -> list[str]:
        return self.registry.removed_models()

    @property
    def broken_models(self) -> dict[str, str]:
        """Models that failed to load, and why."""
        return self.registry.broken_models()

    def add_model(self, model: str) -> None:
        """Serve another model (it needs a profile); a model that failed to load is tried
        again."""
        self.registry.add(model)

    def mark_broken(self, model: str, reason: str) -> None:
        """``model`` cannot be loaded: its queued requests fail now, later ones on arrival."""
        self.registry.mark_broken(model, reason)

    def remove_model(self, model: str) -> int:
        """Stop serving a model (its queued requests fail); how many it had queued."""
        return self.registry.remove(model)

    def status(self) -> dict[str, Any]:
        state = self.state
        with state.cond:
            queues = {m: state.book.length(m) for m in state.book.models}
        return {"resident": self.engine.resident, "running": self.loop.busy_model,
                "queues": queues, "counts": self.settler.counts(), "draining": state.draining,
                "finished": self.finished, "now_s": round(self.now(), 3),
                "begun": state.begun, "strategy": self.strategy.name,
                "sla_s": self.sla_s, "removed_models": self.removed_models,
                "broken_models": self.broken_models}

    # --- the run record (sincere.serving.run_record) ------------------------------------------
    def _finish(self) -> None:
        """On the scheduler thread, once the drain is over: write the run."""
        self.record.finish(self.monitor)

    def close(self) -> None:
        """Close requests.csv and batches.csv (run.json is written again if requests were
        refused after it)."""
        self.record.close()

    def accounting(self) -> dict[str, int | None]:
        """issued (as the generator said), received, completed, rejected, failed, unserved,
        shed."""
        return self.record.accounting()

    @property
    def run_json(self) -> dict[str, Any] | None:
        """run.json as written, or None before the run finishes."""
        return self.record.run_json

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    @property
    def failure(self) -> str | None:
        """Why the run ended early, if it did."""
        return self.state.failure
