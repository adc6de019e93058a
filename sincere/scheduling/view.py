"""The vocabulary of scheduling (SPEC section 4): what a strategy sees and what it decides.

A ``SchedulerView`` is an immutable snapshot of the queues, the resident model, the time and the
profiles; a ``Decision`` says which requests to shed, which batch to run and why, or when to
look again. The helpers answer the questions every strategy asks of a view (best batch, the
latest start of a model's oldest request, which requests are hopeless).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from sincere.profiles.profile_set import ProfileSet


@dataclass(frozen=True)
class QueueState:
    """What a strategy may know of one model's FIFO queue. ``deadlines_s`` holds the queued
    requests' deadlines, oldest first (ascending: one SLA per run, first in first out)."""

    length: int
    head_arrival_s: float = math.inf
    head_deadline_s: float = math.inf
    arrival_rate_rps: float = 0.0
    deadlines_s: Sequence[float] = ()

    def without_oldest(self, count: int, sla_s: float) -> QueueState:
        """This queue less its ``count`` oldest requests."""
        if count <= 0:
            return self
        length = self.length - count
        if length <= 0:
            return QueueState(0, arrival_rate_rps=self.arrival_rate_rps)
        deadlines = ListWindow(self.deadlines_s, count, len(self.deadlines_s))
        return QueueState(length, deadlines[0] - sla_s, deadlines[0], self.arrival_rate_rps,
                          deadlines)

    def due_before(self, time_s: float, first: int = 0, last: int | None = None) -> int:
        """How many of the queued requests first..last-1 have a deadline before ``time_s``."""
        last = self.length if last is None else min(last, self.length)
        return bisect.bisect_left(self.deadlines_s, time_s, first, last) - first


class ListWindow(Sequence[float]):
    """A read-only window on a sequence, without copying it."""

    def __init__(self, base: Sequence[float], start: int, stop: int) -> None:
        self._base, self._start, self._stop = base, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._base[self._start + index]


@dataclass(frozen=True)
class SchedulerView:
    """An immutable snapshot the strategy decides on; ``now`` is the caller's clock."""

    now: float
    queues: Mapping[str, QueueState]
    resident: str | None
    profiles: ProfileSet
    sla_s: float
    max_new_tokens: int
    draining: bool = False  # no more arrivals will come: serve everything

    def without(self, shed: Iterable[tuple[str, int]]) -> SchedulerView:
        """The view once the ``count`` oldest requests of each ``(model, count)`` are gone."""
        queues = dict(self.queues)
        for model, count in shed:
            queues[model] = queues[model].without_oldest(count, self.sla_s)
        return replace(self, queues=queues)


@dataclass(frozen=True)
class Decision:
    """Run ``size`` oldest requests of ``model`` (for ``reason``), or wait until ``wake_at``.

    ``shed`` lists ``(model, count)``: settle that model's ``count`` oldest requests as shed
    first (they can no longer meet their SLA); ``size`` counts from the requests left."""

    model: str | None = None
    size: int = 0
    reason: str | None = None
    wake_at: float | None = None  # None with no model: wait for the next arrival
    shed: tuple[tuple[str, int], ...] = ()

    @property
    def runs(self) -> bool:
        return self.model is not None



def best_batch(view: SchedulerView, model: str) -> int:
    return view.profiles[model].best_batch(view.max_new_tokens)


def largest_batch(view: SchedulerView, model: str) -> int:
    return view.profiles[model].largest_batch(view.max_new_tokens)


def processing_s(view: SchedulerView, model: str, size: int) -> float:
    return view.profiles[model].processing_s(size, view.max_new_tokens)


def latest_start_s(view: SchedulerView, model: str, size: int) -> float:
    """d_head − swap(c→m) − P_m(size): the last moment the oldest request can still make it
    (the timers subtract their margin from this)."""
    queue = view.queues[model]
    return (queue.head_deadline_s - view.profiles.swap_s(view.resident, model)
            - processing_s(view, model, size))


def earliest_end_s(view: SchedulerView, model: str) -> float:
    """now + swap(c→m) + P_m(1): the soonest a request of ``model`` could complete."""
    return view.now + view.profiles.swap_s(view.resident, model) + processing_s(view, model, 1)


def hopeless(view: SchedulerView) -> tuple[tuple[str, int], ...]:
    """``(model, count)`` of the oldest queued requests that could not meet their deadline
    even if dispatched now, alone: d_r < now + swap(c→m) + P_m(1)."""
    shed = []
    for model, queue in view.queues.items():
        if queue.length and queue.head_deadline_s < earliest_end_s(view, model):
            shed.append((model, queue.due_before(earliest_end_s(view, model))))
    return tuple(shed)


def next_hopeless_s(view: SchedulerView) -> float:
    """When the next queued request becomes hopeless (its head's d − swap − P(1)), if nothing
    runs meanwhile; inf with empty queues."""
    times = [queue.head_deadline_s - (earliest_end_s(view, model) - view.now)
             for model, queue in view.queues.items() if queue.length]
    return min(times, default=math.inf)
