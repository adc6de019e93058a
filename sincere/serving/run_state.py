"""One run's clock, its queues, and where it is in its life: begun, draining, finished.

Request threads and the scheduler thread share this state under one condition (``cond``): they
read and change the queues (``book``) and the phase only while they hold it, and wait on it for
what they need. ``RunSetup`` is what the run is set up with and never changes. The parts of the
server (``sincere.serving.admission``, ``model_registry``, ``scheduler_loop``, ``run_record``)
each take these two and decide for themselves; this module decides nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere.profiles.profile_set import ProfileSet
from sincere.scheduling.queues import QueueBook
from sincere.scheduling.strategies import Strategy


@dataclass(frozen=True)
class RunSetup:
    """What one run is set up with."""

    engine: Any
    profiles: ProfileSet
    strategy: Strategy
    sla_s: float
    max_new_tokens: int
    run_dir: Path
    drain_timeout_s: float
    max_queue: int
    straggler_grace_s: float


class RunState:
    """The run's clock (seconds since ``begin``, on a monotonic clock), the queues, and its
    phase. Change anything here only while holding ``cond``."""

    def __init__(self, models: list[str], rate_window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cond = threading.Condition()
        self.book = QueueBook(models, rate_window_s=rate_window_s)
        self._clock = clock
        self.start: float | None = None  # the clock's reading when the run began
        self.started_epoch_s: float | None = None
        self.process_cpu_at_begin_s = 0.0
        self.draining = False  # traffic has ended (/stop) or the run was aborted
        self.drain_deadline_s = math.inf
        self.straggler_deadline_s = math.inf
        self.issued: int | None = None  # what the generator says it sent, from stop()
        self.traffic_end_s: float | None = None  # when stop() came
        self.intake_closed = False  # the drain is over: every request is refused
        self.end_status = "complete"
        self.failure: str | None = None  # why the run ended early, if it did
        self.finished = threading.Event()  # run.json is written

    @property
    def begun(self) -> bool:
        return self.start is not None

    def begin(self) -> bool:
        """Start the clock, once (hold ``cond``); False when the run had already begun."""
        if self.start is not None:
            return False
        self.start = self._clock()
        self.started_epoch_s = time.time()
        self.process_cpu_at_begin_s = time.process_time()
        return True

    def now(self) -> float:
        """Seconds since the run began, on the monotonic clock (0 before it begins)."""
        return 0.0 if self.start is None else self._clock() - self.start

    def end_traffic(self, issued: int | None, drain_timeout_s: float,
                    straggler_grace_s: float) -> bool:
        """No more traffic (hold ``cond``): the drain and the stragglers' grace start now.
        False when it had already ended."""
        if self.draining:
            return False
        self.draining = True
        now = self.now()
        self.drain_deadline_s = now + drain_timeout_s
        self.straggler_deadline_s = now + straggler_grace_s
        self.issued = issued
        self.traffic_end_s = now
        return True

    def abort(self, reason: str) -> None:
        """End now (hold ``cond``): no batch starts after the one running; run.json says
        ``reason`` instead of complete."""
        self.end_status = reason
        self.draining = True
        self.drain_deadline_s = -math.inf

    def fail(self, failure: str) -> None:
        """The run ends early because a part of the server failed."""
        self.end_status = "failed"
        self.failure = failure
