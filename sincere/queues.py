"""Per-model FIFO queues with arrival-rate windows: the state both schedulers keep.

The server's scheduler thread and the simulator each own one ``QueueBook``; it turns their
queues into the immutable ``SchedulerView`` the strategies decide on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sincere.profiles import ProfileSet
from sincere.strategies import QueueState, SchedulerView


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


class QueueBook:
    """FIFO queue and recent arrival times of each model."""

    def __init__(self, models: Iterable[str], rate_window_s: float = 60.0,
                 start_s: float = 0.0) -> None:
        self._queues: dict[str, deque[Request]] = {m: deque() for m in models}
        self._arrivals: dict[str, deque[float]] = {m: deque() for m in self._queues}
        self.rate_window_s = rate_window_s
        self.start_s = start_s

    @property
    def models(self) -> list[str]:
        return list(self._queues)

    def add_model(self, model: str) -> None:
        self._queues.setdefault(model, deque())
        self._arrivals.setdefault(model, deque())

    def remove_model(self, model: str) -> list[Request]:
        """Forget a model; its queued requests are returned for the caller to settle."""
        self._arrivals.pop(model, None)
        return list(self._queues.pop(model, ()))

    def add(self, request: Request) -> None:
        if request.model not in self._queues:
            raise KeyError(f"no queue for model {request.model!r}")
        self._queues[request.model].append(request)
        self._arrivals[request.model].append(request.arrival_s)

    def take(self, model: str, size: int) -> list[Request]:
        """Remove and return the ``size`` oldest requests of ``model``."""
        queue = self._queues[model]
        return [queue.popleft() for _ in range(min(size, len(queue)))]

    def take_all(self) -> list[Request]:
        """Empty every queue (what is left at the end of the drain)."""
        left = [r for q in self._queues.values() for r in q]
        for queue in self._queues.values():
            queue.clear()
        return sorted(left, key=lambda r: r.arrival_s)

    def length(self, model: str) -> int:
        return len(self._queues.get(model, ()))

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
        states = {}
        for model, queue in self._queues.items():
            if queue:
                head = queue[0]
                states[model] = QueueState(len(queue), head.arrival_s, head.deadline_s,
                                           self.arrival_rate_rps(model, now))
            else:
                states[model] = QueueState(0, arrival_rate_rps=self.arrival_rate_rps(model, now))
        return SchedulerView(now=now, queues=states, resident=resident, profiles=profiles,
                             sla_s=sla_s, max_new_tokens=max_new_tokens, draining=draining)
