"""Batch-scheduling strategies (SPEC section 4): pure decisions over a view of the queues.

A strategy never touches the GPU or a clock: ``decide(view)`` looks at the queues, the resident
model, the time in the view and the profiles, and returns a frozen ``Decision``: run the oldest
``size`` requests of ``model`` for ``reason``, or run nothing and look again at ``wake_at`` (or
at the next arrival). The server's scheduler thread and the simulator call the same objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import ClassVar

from sincere.profiles import ProfileSet

DEFAULT_MARGIN_S = 1.0  # safety margin of the timers, seconds
DEFAULT_MAX_QUEUE_DELAY_S = 1.0  # Dynamic+Delay: the longest the oldest request may wait
DEFAULT_RATE_WINDOW_S = 60.0  # SelectBatch+Timer: sliding window of the arrival rate


@dataclass(frozen=True)
class QueueState:
    """What a strategy may know of one model's FIFO queue."""

    length: int
    head_arrival_s: float = math.inf
    head_deadline_s: float = math.inf
    arrival_rate_rps: float = 0.0


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


@dataclass(frozen=True)
class Decision:
    """Run ``size`` oldest requests of ``model`` (for ``reason``), or wait until ``wake_at``."""

    model: str | None = None
    size: int = 0
    reason: str | None = None
    wake_at: float | None = None  # None with no model: wait for the next arrival

    @property
    def runs(self) -> bool:
        return self.model is not None


@dataclass(frozen=True)
class _Candidate:
    model: str
    size: int
    reason: str
    head_deadline_s: float


@dataclass(frozen=True)
class Strategy:
    """Shared machinery: per-model target size, readiness by count or timer, EDF between models.

    Subclasses say how large a batch should be (``target_size``) and when a smaller one must
    leave anyway (``fire_time``).
    """

    name: ClassVar[str] = ""
    margin_s: float = DEFAULT_MARGIN_S

    def params(self) -> dict[str, object]:
        """The strategy's settings, for run.json."""
        return {"margin_s": self.margin_s}

    # -- what subclasses define ------------------------------------------------------------
    def target_size(self, view: SchedulerView, model: str) -> int:
        """The batch size this model waits for: its best batch B_m by default."""
        return best_batch(view, model)

    def fire_time(self, view: SchedulerView, model: str, size: int) -> float | None:
        """When a batch of ``size`` must leave though it is below target; None: never."""
        return None

    def ready_reason(self) -> str:
        return "full"

    # -- the decision ------------------------------------------------------------------------
    def decide(self, view: SchedulerView) -> Decision:
        ready: list[_Candidate] = []
        wake_at = math.inf
        for model, queue in view.queues.items():
            if queue.length == 0:
                continue
            # In the drain no more requests will come: serve in best batches, whatever the target.
            wanted = best_batch(view, model) if view.draining else self.target_size(view, model)
            target = max(1, min(wanted, largest_batch(view, model)))
            size = min(queue.length, target)
            if view.draining:
                ready.append(_Candidate(model, size, "drain", queue.head_deadline_s))
            elif queue.length >= target:
                ready.append(_Candidate(model, size, self.ready_reason(), queue.head_deadline_s))
            else:
                fire_at = self.fire_time(view, model, size)
                if fire_at is None:
                    continue
                if view.now >= fire_at:
                    ready.append(_Candidate(model, size, "timer", queue.head_deadline_s))
                else:
                    wake_at = min(wake_at, fire_at)
        if not ready:
            return Decision(wake_at=wake_at if math.isfinite(wake_at) else None)
        chosen = min(ready, key=lambda c: (c.head_deadline_s, c.model != view.resident, c.model))
        return self.before_dispatch(view, chosen)

    def before_dispatch(self, view: SchedulerView, chosen: _Candidate) -> Decision:
        """A last look before the chosen batch leaves (PartialBatch serves the resident first)."""
        return Decision(model=chosen.model, size=chosen.size, reason=chosen.reason)


def best_batch(view: SchedulerView, model: str) -> int:
    return view.profiles[model].best_batch(view.max_new_tokens)


def largest_batch(view: SchedulerView, model: str) -> int:
    return view.profiles[model].largest_batch(view.max_new_tokens)


def latest_start_s(view: SchedulerView, model: str, size: int) -> float:
    """d_head − swap(c→m) − P_m(size): the last moment the oldest request can still make it
    (the timers subtract their margin from this)."""
    queue = view.queues[model]
    return (queue.head_deadline_s - view.profiles.swap_s(view.resident, model)
            - view.profiles[model].processing_s(size, view.max_new_tokens))


@dataclass(frozen=True)
class BestBatch(Strategy):
    """Wait for the best batch B_m; ignores latency and swaps (the baseline)."""

    name: ClassVar[str] = "BestBatch"


@dataclass(frozen=True)
class BestBatchTimer(Strategy):
    """BestBatch, and a smaller batch leaves at the latest moment its oldest request can still
    meet its SLA."""

    name: ClassVar[str] = "BestBatch+Timer"

    def fire_time(self, view: SchedulerView, model: str, size: int) -> float | None:
        return latest_start_s(view, model, size) - self.margin_s


@dataclass(frozen=True)
class SelectBatchTimer(BestBatchTimer):
    """The target is the largest candidate size that the model's recent arrival rate fills in
    time: b ≤ λ_m · (SLA − swap − P_m(b) − margin)."""

    name: ClassVar[str] = "SelectBatch+Timer"

    base_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
    rate_window_s: float = DEFAULT_RATE_WINDOW_S

    def params(self) -> dict[str, object]:
        return {**super().params(), "batch_sizes": list(self.base_sizes),
                "rate_window_s": self.rate_window_s}

    def target_size(self, view: SchedulerView, model: str) -> int:
        best = best_batch(view, model)
        rate = view.queues[model].arrival_rate_rps
        swap_s = view.profiles.swap_s(view.resident, model)
        profile = view.profiles[model]
        target = 1
        for size in sorted({b for b in self.base_sizes if b <= best} | {best}):
            budget_s = (view.sla_s - swap_s - profile.processing_s(size, view.max_new_tokens)
                        - self.margin_s)
            if size <= rate * budget_s:
                target = size
        return target


@dataclass(frozen=True)
class BestBatchPartialBatchTimer(BestBatchTimer):
    """BestBatch+Timer, and before swapping away from the resident model its queued requests
    leave first as a partial batch, when the batch that asked for the swap stays on time."""

    name: ClassVar[str] = "BestBatch+PartialBatch+Timer"

    def before_dispatch(self, view: SchedulerView, chosen: _Candidate) -> Decision:
        resident = view.resident
        if resident is None or chosen.model == resident or view.draining:
            return super().before_dispatch(view, chosen)
        queue = view.queues.get(resident)
        if queue is None or queue.length == 0:
            return super().before_dispatch(view, chosen)
        size = min(queue.length, self.target_size(view, resident),
                   largest_batch(view, resident))
        partial_end_s = view.now + view.profiles[resident].processing_s(size, view.max_new_tokens)
        # The resident model stays loaded, so the chosen batch's swap cost is unchanged.
        if partial_end_s <= latest_start_s(view, chosen.model, chosen.size) - self.margin_s:
            return Decision(model=resident, size=size, reason="partial")
        return super().before_dispatch(view, chosen)


@dataclass(frozen=True)
class Immediate(Strategy):
    """Whenever the GPU is free, take up to B_m queued requests at once (no waiting)."""

    name: ClassVar[str] = "Immediate"

    def target_size(self, view: SchedulerView, model: str) -> int:
        return min(view.queues[model].length, best_batch(view, model))

    def ready_reason(self) -> str:
        return "immediate"


@dataclass(frozen=True)
class DynamicDelay(Strategy):
    """A dynamic batcher: a full batch, or the oldest request has waited max_queue_delay."""

    name: ClassVar[str] = "Dynamic+Delay"

    max_queue_delay_s: float = DEFAULT_MAX_QUEUE_DELAY_S

    def params(self) -> dict[str, object]:
        return {**super().params(), "max_queue_delay_s": self.max_queue_delay_s}

    def fire_time(self, view: SchedulerView, model: str, size: int) -> float | None:
        return view.queues[model].head_arrival_s + self.max_queue_delay_s


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (BestBatch, BestBatchTimer, SelectBatchTimer,
                              BestBatchPartialBatchTimer, Immediate, DynamicDelay)
}


def make_strategy(name: str, **options: object) -> Strategy:
    """The strategy the user named (as typed, e.g. ``BestBatch+Timer``).

    ``options`` may hold the settings of every strategy (the scripts pass all their constants);
    each strategy takes those it has, and a name that no strategy has is an error.
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None
    known = {f.name for strategy in STRATEGIES.values() for f in fields(strategy)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown strategy option(s): {', '.join(unknown)}")
    own = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in own})


def strategy_slug(name: str) -> str:
    """``BestBatch+PartialBatch+Timer`` -> ``bestbatch-partialbatch-timer`` (for run ids)."""
    return name.lower().replace("+", "-")
