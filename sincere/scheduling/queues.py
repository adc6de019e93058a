"""Per-model FIFO queues with arrival-rate windows: the state both schedulers keep.

The server's scheduler thread and the simulator each own one ``QueueBook``; it turns their
queues into the immutable ``SchedulerView`` the strategies decide on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sincere.profiles.profile_set import ProfileSet
from sincere.scheduling.view import ListWindow, QueueState, SchedulerView


@dataclass(eq=False)
class Request:
    """One request as the scheduler sees it. ``payload`` (the prompt and whatever the server
    needs to answer) is never recorded."""

    request_id: str
    model: str
    arrival_s: float
    deadline_s: float
    prompt_tokens: int | None = None
    payload: object = field(default=None, repr=False)


class _Fifo:
    """One model's queue: a list with a moving head, so that the strategies can bisect the
    queued requests' deadlines without a copy; compacted once the head passes half."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.deadlines_s: list[float] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.requests) - self.head

    def append(self, request: Request) -> None:
        self.requests.append(request)
        self.deadlines_s.append(request.deadline_s)

    def pop_oldest(self, count: int) -> list[Request]:
        taken = self.requests[self.head:self.head + count]
        self.head += len(taken)
        if self.head > 64 and self.head * 2 > len(self.requests):
            # New lists: a view handed out earlier keeps the old ones, unchanged.
            self.requests = self.requests[self.head:]
            self.deadlines_s = self.deadlines_s[self.head:]
            self.head = 0
        return taken

    def state(self, rate_rps: float) -> QueueState:
        if not len(self):
            return QueueState(0, arrival_rate_rps=rate_rps)
        head = self.requests[self.head]
        return QueueState(len(self), head.arrival_s, head.deadline_s, rate_rps,
                          ListWindow(self.deadlines_s, self.head, len(self.requests)))


class QueueBook:
    """FIFO queue and recent arrival times of each model."""

    def __init__(self, models: Iterable[str], rate_window_s: float = 60.0,
                 start_s: float = 0.0) -> None:
        self._queues: dict[str, _Fifo] = {m: _Fifo() for m in models}
        self._arrivals: dict[str, deque[float]] = {m: deque() for m in self._queues}
        self.rate_window_s = rate_window_s
        self.start_s = start_s

    @property
    def models(self) -> list[str]:
        return list(self._queues)

    def add_model(self, model: str) -> None:
        self._queues.setdefault(model, _Fifo())
        self._arrivals.setdefault(model, deque())

    def remove_model(self, model: str) -> list[Request]:
        """Forget a model; its queued requests are returned for the caller to settle."""
        self._arrivals.pop(model, None)
        queue = self._queues.pop(model, None)
        return queue.pop_oldest(len(queue)) if queue is not None else []

    def add(self, request: Request) -> None:
        if request.model not in self._queues:
            raise KeyError(f"no queue for model {request.model!r}")
        self._queues[request.model].append(request)
        self._arrivals[request.model].append(request.arrival_s)

    def take(self, model: str, size: int) -> list[Request]:
        """Remove and return the ``size`` oldest requests of ``model``."""
        return self._queues[model].pop_oldest(size)

    def take_all(self) -> list[Request]:
        """Empty every queue (what is left at the end of the drain)."""
        left = [r for q in self._queues.values() for r in q.pop_oldest(len(q))]
        return sorted(left, key=lambda r: r.arrival_s)

    def length(self, model: str) -> int:
        queue = self._queues.get(model)
        return len(queue) if queue is not None else 0

    def total(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def arrival_rate_rps(self, model: str, now: float) -> float:
        """Arrivals of ``model`` per second over the last window (over the time elapsed, at least
        one second, while the run is younger than the window)."""
        times = self._arrivals[model]
        while times and times[0] <= now - self.rate_window_s:
            times.popleft()
        span_s = min(self.rate_window_s, max(now - self.start_s, 1.0))
        return len(times) / span_s

    def view(self, now: float, resident: str | None, profiles: ProfileSet, sla_s: float,
             max_new_tokens: int, draining: bool = False) -> SchedulerView:
        states = {model: queue.state(self.arrival_rate_rps(model, now))
                  for model, queue in self._queues.items()}
        return SchedulerView(now=now, queues=states, resident=resident, profiles=profiles,
                             sla_s=sla_s, max_new_tokens=max_new_tokens, draining=draining)
