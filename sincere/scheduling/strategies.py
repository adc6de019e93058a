"""Batch-scheduling strategies (SPEC section 4): pure decisions over a view of the queues.

A strategy never touches the GPU or a clock: ``decide(view)`` looks at the queues, the resident
model, the time in the view and the profiles (`sincere.scheduling.view`), and returns a frozen
``Decision``: shed the hopeless, run the oldest ``size`` requests of ``model`` for ``reason``, or
run nothing and look again at ``wake_at`` (or at the next arrival). The server's scheduler thread
and the simulator call the same objects. One registry, ``STRATEGIES``, names them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from sincere.scheduling.view import (
    Decision,
    SchedulerView,
    best_batch,
    hopeless,
    largest_batch,
    latest_start_s,
    next_hopeless_s,
    processing_s,
)

DEFAULT_MARGIN_S = 1.0  # safety margin of the timers, seconds
DEFAULT_MAX_QUEUE_DELAY_S = 1.0  # Dynamic+Delay: the longest the oldest request may wait
DEFAULT_RATE_WINDOW_S = 60.0  # SelectBatch+Timer: sliding window of the arrival rate


@dataclass(frozen=True)
class _Candidate:
    model: str
    size: int
    reason: str
    head_deadline_s: float


@dataclass(frozen=True)
class Strategy:
    """Shared machinery: shedding, per-model target size, readiness by count or timer, EDF
    between models.

    Subclasses say how large a batch should be (``target_size``), when a smaller one must
    leave anyway (``fire_time``), and how large it is once it may leave (``batch_size``).
    """

    name: ClassVar[str] = ""
    margin_s: float = DEFAULT_MARGIN_S
    shed_late: bool = False  # settle requests that can no longer meet their SLA as shed

    def params(self) -> dict[str, object]:
        """The strategy's settings, for run.json."""
        return {"margin_s": self.margin_s, "shed_late": self.shed_late}

    # -- what subclasses define ------------------------------------------------------------
    def target_size(self, view: SchedulerView, model: str) -> int:
        """The batch size this model waits for: its best batch B_m by default."""
        return best_batch(view, model)

    def fire_time(self, view: SchedulerView, model: str, size: int) -> float | None:
        """When a batch of ``size`` must leave though it is below target; None: never."""
        return None

    def batch_size(self, view: SchedulerView, model: str, target: int) -> int:
        """How many requests leave once the batch may: up to the target."""
        return min(view.queues[model].length, target)

    def ready_reason(self) -> str:
        return "full"

    # -- the decision ------------------------------------------------------------------------
    def decide(self, view: SchedulerView) -> Decision:
        """Shed what is hopeless (when ``shed_late``), then choose on the queues left."""
        if not self.shed_late:
            return self.choose(view)
        shed = hopeless(view)
        if shed:
            view = view.without(shed)
        decision = self.choose(view)
        wake_at = min(decision.wake_at if decision.wake_at is not None else math.inf,
                      next_hopeless_s(view))
        return replace(decision, shed=shed,
                       wake_at=None if decision.runs or math.isinf(wake_at) else wake_at)

    def choose(self, view: SchedulerView) -> Decision:
        ready: list[_Candidate] = []
        wake_at = math.inf
        for model, queue in view.queues.items():
            if queue.length == 0:
                continue
            # In the drain no more requests will come: serve in best batches, whatever the target.
            wanted = best_batch(view, model) if view.draining else self.target_size(view, model)
            target = max(1, min(wanted, largest_batch(view, model)))
            if view.draining:
                ready.append(_Candidate(model, min(queue.length, target), "drain",
                                        queue.head_deadline_s))
            elif queue.length >= target:
                ready.append(_Candidate(model, self.batch_size(view, model, target),
                                        self.ready_reason(), queue.head_deadline_s))
            else:
                size = queue.length
                fire_at = self.fire_time(view, model, size)
                if fire_at is None:
                    continue
                if view.now >= fire_at:
                    ready.append(_Candidate(model, self.batch_size(view, model, target),
                                            "timer", queue.head_deadline_s))
                else:
                    wake_at = min(wake_at, fire_at)
        if not ready:
            return Decision(wake_at=wake_at if math.isfinite(wake_at) else None)
        chosen = min(ready, key=lambda c: (c.head_deadline_s, c.model != view.resident, c.model))
        return self.before_dispatch(view, chosen)

    def before_dispatch(self, view: SchedulerView, chosen: _Candidate) -> Decision:
        """A last look before the chosen batch leaves (PartialBatch serves the resident first)."""
        return Decision(model=chosen.model, size=chosen.size, reason=chosen.reason)



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

    def batch_size(self, view: SchedulerView, model: str, target: int) -> int:
        """The target says when the batch may leave; once it may, it takes what is queued up
        to B_m, so a backlog is absorbed rather than served in target-sized pieces."""
        return min(view.queues[model].length, best_batch(view, model),
                   largest_batch(view, model))


@dataclass(frozen=True)
class BestBatchPartialBatchTimer(BestBatchTimer):
    """BestBatch+Timer that swaps less: a swap away from the resident model c serves c's queue
    first as a ``partial`` batch, and to leave room for it the timer of a non-resident model m
    fires at d_head − swap(c→m) − P_m(size) − P_c(resident batch) − margin while c has
    requests queued."""

    name: ClassVar[str] = "BestBatch+PartialBatch+Timer"

    def _resident_batch(self, view: SchedulerView) -> int:
        """The partial batch the resident model would send now (0 when none)."""
        resident = view.resident
        if resident is None or resident not in view.queues or view.draining:
            return 0
        return min(view.queues[resident].length, best_batch(view, resident),
                   largest_batch(view, resident))

    def fire_time(self, view: SchedulerView, model: str, size: int) -> float | None:
        fire_at = super().fire_time(view, model, size)
        partial = self._resident_batch(view) if model != view.resident else 0
        if fire_at is None or not partial:
            return fire_at
        return fire_at - processing_s(view, view.resident, partial)

    def before_dispatch(self, view: SchedulerView, chosen: _Candidate) -> Decision:
        partial = self._resident_batch(view)
        if chosen.model == view.resident or not partial:
            return super().before_dispatch(view, chosen)
        # The resident model stays loaded, so the chosen batch's swap cost is unchanged; its
        # timer fired early enough for the partial batch (or it was full, with time to spare).
        partial_end_s = view.now + processing_s(view, view.resident, partial)
        if partial_end_s <= latest_start_s(view, chosen.model, chosen.size) - self.margin_s:
            return Decision(model=view.resident, size=partial, reason="partial")
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


@dataclass(frozen=True)
class MaxGoodput(Strategy):
    """Built to maximise SLA attainment with swaps and overload in mind (SPEC section 4).

    1. Shed: a queued request that could not meet its deadline even if dispatched now, alone
       (d_r < now + swap(c→m) + P_m(1)), is settled as shed at once, so that no GPU time goes
       to a request that is lost anyway and the queues never collapse under overload.
    2. Wait while waiting can only help: no batch leaves until a model's queue holds its best
       batch B_m, or a model's timer fires (now ≥ d_head − swap(c→m) − P_m(n) − margin, n its
       queued requests up to B_m), or the traffic has ended.
    3. Then choose by plans: for each model m with requests queued, the plan "m's batch first,
       then one batch of every other queued model in deadline order" is played forward on the
       profiled times (swaps included), and the plan that meets the most deadlines wins; on a
       tie, the shortest plan (the fewest swaps), then the resident model. Each batch is a
       model's oldest min(n, B_m) requests. A swap therefore happens only when staying on the
       resident model would lose more requests than the swap's time costs the others.
    """

    name: ClassVar[str] = "MaxGoodput"

    shed_late: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "shed_late", True)  # shedding is part of the rule, always on

    def choose(self, view: SchedulerView) -> Decision:
        sizes = {model: min(queue.length, best_batch(view, model), largest_batch(view, model))
                 for model, queue in view.queues.items() if queue.length}
        if not sizes:
            return Decision()
        full = [m for m, n in sizes.items() if view.queues[m].length >= best_batch(view, m)]
        fire_at = {m: latest_start_s(view, m, n) - self.margin_s for m, n in sizes.items()}
        due = [m for m, t in fire_at.items() if view.now >= t]
        if not (view.draining or full or due):
            return Decision(wake_at=min(fire_at.values()))
        by_deadline = sorted(sizes, key=lambda m: (view.queues[m].head_deadline_s, m))

        def rank(first: str) -> tuple[int, float, bool, str]:
            met, ends_s = self._play(view, [first, *(m for m in by_deadline if m != first)],
                                     sizes)
            return (-met, ends_s, first != view.resident, first)

        chosen = min(sizes, key=rank)
        reason = ("drain" if view.draining else "full" if chosen in full else "timer")
        return Decision(model=chosen, size=sizes[chosen], reason=reason)

    @staticmethod
    def _play(view: SchedulerView, order: list[str], sizes: Mapping[str, int]
              ) -> tuple[int, float]:
        """(deadlines met, end) of serving one batch of each model in ``order`` from now."""
        clock_s, resident, met = view.now, view.resident, 0
        for model in order:
            clock_s += (view.profiles.swap_s(resident, model)
                        + processing_s(view, model, sizes[model]))
            resident = model
            met += sizes[model] - view.queues[model].due_before(clock_s, 0, sizes[model])
        return met, clock_s


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (BestBatch, BestBatchTimer, SelectBatchTimer,
                              BestBatchPartialBatchTimer, Immediate, DynamicDelay, MaxGoodput)
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


def options_from_constants(constants: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy options a script sets, from its constants of the same names in upper case
    (``MARGIN_S`` -> ``margin_s``); options without a constant keep their defaults."""
    names = {f.name for strategy in STRATEGIES.values() for f in fields(strategy)}
    return {name: constants[name.upper()] for name in sorted(names)
            if name.upper() in constants}


def strategy_slug(name: str) -> str:
    """``BestBatch+PartialBatch+Timer`` -> ``bestbatch-partialbatch-timer`` (for run ids)."""
    return name.lower().replace("+", "-")
