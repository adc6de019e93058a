"""The run record of a measured run: the end of the run, and its run.json.

When the drain is over (``finish``, on the scheduler thread) intake closes, what is still queued
is settled as ``unserved``, the run's time is fixed, the monitor stops, and run.json is written:
the params (the generator's and the server's, ``sincere.runs.params``), the environment, the
accounting (``sincere.runs.accounting``), the traffic window (``sincere.runs.window``), the times,
the server's CPU figures and the summary metrics (``sincere.runs.metrics``), with the run's
identity (``sincere.runs.identity``). ``close`` closes the CSVs; requests refused after the
run ended are in requests.csv and counted, and run.json is written again to say so. The
summary figures only the server can compute (the SLA-attainment bound on the arrivals it
received, the fit to the profile, its own time per batch) are ``_written``'s.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from sincere.files import write_json_atomic
from sincere.runs.accounting import server_books
from sincere.runs.fidelity import profile_fit
from sincere.runs.identity import with_identity
from sincere.runs.metrics import run_metrics
from sincere.runs.params import SIDE_KEYS, run_params
from sincere.runs.rundirs import read_batches, read_monitor, read_requests
from sincere.runs.window import traffic_window_s
from sincere.scheduling.bound import sla_attainment_bound
from sincere.serving.model_registry import ModelRegistry
from sincere.serving.run_state import RunSetup, RunState
from sincere.serving.scheduler_loop import SchedulerLoop
from sincere.serving.settling import Settler

log = logging.getLogger("sincere.serving")


class RunRecord:
    """run.json of one run, from the parts of its server."""

    def __init__(self, setup: RunSetup, state: RunState, settler: Settler,
                 registry: ModelRegistry, loop: SchedulerLoop,
                 params: dict[str, Any] | None = None,
                 environment: dict[str, Any] | None = None) -> None:
        self.setup = setup
        self.state = state
        self.settler = settler
        self.registry = registry
        self.loop = loop
        self.params = dict(params or {})  # the server's, then the generator's from /start, /stop
        self.environment = environment or {}
        # Fixed when the run finishes (the drain is over): a request refused afterwards is
        # recorded and counted, but changes no duration, rate or fraction.
        self.run_time_s: float | None = None
        self.process_cpu_s = 0.0  # CPU seconds of the whole process over the run
        self.run_json: dict[str, Any] | None = None

    def finish(self, monitor: Any = None) -> None:
        """After the drain: intake closes, what is still queued is unserved; write run.json."""
        state = self.state
        with state.cond:
            state.intake_closed = True  # from here on every request is refused (and recorded)
            left = state.book.take_all()
        for request in left:
            self.settler.settle(request, "unserved")
        self.run_time_s = max(state.now(), self.loop.last_end_s)
        self.process_cpu_s = time.process_time() - state.process_cpu_at_begin_s
        if monitor is not None:
            monitor.stop()
        self.run_json = self._run_json()
        write_json_atomic(self.setup.run_dir / "run.json", self.run_json)
        log.info("run finished: %s", self.run_json["accounting"])
        state.finished.set()

    def close(self) -> None:
        """Close requests.csv and batches.csv. Requests refused once intake had closed are in
        requests.csv too; when run.json was written without them, it is written again."""
        self.settler.close()
        if self.run_json is not None and self.run_json["accounting"] != self.accounting():
            self.run_json = self._run_json()
            write_json_atomic(self.setup.run_dir / "run.json", self.run_json)
            log.info("requests refused after the run ended; run.json updated: %s",
                     self.run_json["accounting"])

    def accounting(self) -> dict[str, int | None]:
        """run.json's books (``sincere.runs.accounting``): issued as the generator said, then
        received and one count per final status as the server recorded them."""
        counts = self.settler.counts()
        return server_books(counts, counts["received"], self.state.issued)

    def params_block(self) -> dict[str, Any]:
        """run.json's ``params`` (``sincere.runs.params``): the generator's traffic half as it
        gave it, and the serving half."""
        setup = self.setup
        removed = sorted(self.registry.removed)
        side = {k: v for k, v in self.params.items() if k in SIDE_KEYS}
        traffic = {k: v for k, v in self.params.items() if k not in SIDE_KEYS
                   and k != "profiles"}
        return run_params(
            traffic, strategy=setup.strategy.name, strategy_params=setup.strategy.params(),
            sla_s=setup.sla_s, max_new_tokens=setup.max_new_tokens,
            models=sorted(self.state.book.models) + removed, engine="hf",
            profiles=self.params.get("profiles"), drain_timeout_s=setup.drain_timeout_s,
            max_queue=setup.max_queue, **{**side, "removed_models": removed})

    def _written(self, requests: pd.DataFrame, batches: pd.DataFrame) -> dict[str, Any]:
        """The summary figures only the server can compute: the SLA-attainment bound on the
        arrivals received (`sincere.scheduling.bound`; over every issued request, so requests never
        received count as misses there too), the fit to the profile and its own time."""
        setup = self.setup
        served = requests[requests["model"].isin(setup.profiles.models)]
        issued = max(len(requests), self.state.issued or 0)
        bound = None if served.empty or not issued else sla_attainment_bound(
            served["arrival_s"].to_numpy(float), served["model"].astype(str).tolist(),
            setup.sla_s, setup.profiles, setup.max_new_tokens, issued=issued)
        return {"sla_attainment_bound": bound,
                "server_time_per_batch_s": self.loop.server_time_s / len(batches)
                if len(batches) else None,
                **profile_fit(batches, setup.profiles, setup.max_new_tokens, requests)}

    def _run_json(self) -> dict[str, Any]:
        setup, state, loop = self.setup, self.state, self.loop
        run_time_s = self.run_time_s if self.run_time_s is not None else max(state.now(),
                                                                             loop.last_end_s)
        accounting = self.accounting()  # first: the rows read next hold at least these
        requests = read_requests(setup.run_dir)
        batches = read_batches(setup.run_dir)
        monitor = read_monitor(setup.run_dir)
        arrivals = requests["arrival_s"]
        window_s = traffic_window_s(self.params.get("duration_s"),
                                    float(arrivals.max()) if arrivals.notna().any() else None)
        return with_identity({
            "run_id": setup.run_dir.name, "status": state.end_status,
            "params": self.params_block(),
            "failure": state.failure, "broken_models": self.registry.broken_models(),
            "environment": self.environment, "accounting": accounting,
            "started_epoch_s": state.started_epoch_s, "traffic_end_s": state.traffic_end_s,
            "traffic_window_s": window_s, "run_time_s": run_time_s,
            "server_cpu": {"process_cpu_s": round(self.process_cpu_s, 4),
                           "engine_cpu_s": round(loop.engine_cpu_s, 4),
                           "engine_wall_s": round(loop.engine_wall_s, 4)},
            "compile_counts": getattr(setup.engine, "compile_counts", dict)(),
            "summary": run_metrics(requests, batches, window_s, monitor, issued=state.issued,
                                   written=self._written(requests, batches)),
        })
