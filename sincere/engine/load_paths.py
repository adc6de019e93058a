"""Which copy a swap uses on this machine, chosen by timing each one, not assumed.

Three ways to copy a model's host cache to the device (sincere.engine.weights.COPY_MODES): from
pinned memory in one copy, from pageable memory in one copy, from pageable memory in chunks from
several threads on their own CUDA streams. Without CC pinned memory is ~8x faster than pageable (the
reference H100: 53.9 against 6.5 GB/s). Under CC ``cudaHostAlloc`` is allowed (copies go through the
driver's encrypted bounce buffers; only ``cudaHostRegister`` is refused) and secure copies have been
measured serialised within a context, so neither "pinned is useless under CC" nor "four streams
help" is safe to assume: the profiler times all three on one model and the server uses the fastest
(the profile's ``copy_mode``, with the timings in ``load_path_reason``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sincere.engine.weights import COPY_MODES, pin

MEASURE_ORDER = ("pageable", "chunked", "pinned")  # pinning last: it is not undone for free


@dataclass(frozen=True)
class LoadPathChoice:
    """The copy mode chosen, why, and each mode's median swap seconds (None: not timed)."""

    mode: str
    reason: str
    median_s: dict[str, float | None]


def time_copy_modes(engine: Any, alias: str, rounds: int = 3, warmup: int = 1,
                    modes: tuple[str, ...] = MEASURE_ORDER,
                    log: Callable[[str], None] = print) -> dict[str, list[float] | str]:
    """Swap ``alias`` (in ``engine``'s host cache, not pinned) in and out ``rounds`` times per
    copy mode, after ``warmup`` untimed swaps; per mode its load seconds, or why it was not
    timed (pinned memory needs CUDA, or pinning was refused). The host copy is left pinned
    when the pinned mode was timed."""
    entry = engine.host.get(alias)
    if entry is None or entry.weights.pinned:
        raise ValueError(f"{alias!r} must be in the host cache, not pinned")
    times: dict[str, list[float] | str] = {}
    for mode in modes:
        if mode == "pinned":
            if not engine.is_cuda:
                times[mode] = "needs CUDA"
                continue
            entry.pinning = pin(entry.weights)  # what engine.pinning(alias) reports from now
            if entry.pinning.how == "none":
                times[mode] = "pinning refused"
                continue
        engine.host.copy_mode = mode
        seconds = []
        for round_number in range(warmup + rounds):
            loaded = engine.load(alias)
            engine.unload()
            if round_number >= warmup:
                seconds.append(loaded.seconds)
        times[mode] = seconds
        log(f"  {alias} {mode}: median {statistics.median(seconds):.4f} s of {rounds} swaps")
    return times


def choose(times: Mapping[str, list[float] | str], alias: str, size_gb: float) -> LoadPathChoice:
    """The mode of the lowest median swap time, with a reason that gives every mode's figure."""
    median_s = {mode: statistics.median(t) if isinstance(t, list) and t else None
                for mode, t in times.items()}
    timed = {mode: s for mode, s in median_s.items() if s is not None}
    if not timed:
        raise ValueError("no copy mode could be timed")
    best = min(timed, key=lambda mode: (timed[mode], COPY_MODES.index(mode)))
    figures = ", ".join(f"{mode} {s:.4f} s" for mode, s in timed.items())
    skipped = "; ".join(f"{mode} not timed ({t})" for mode, t in times.items()
                        if isinstance(t, str))
    reason = (f"{best} fastest: {figures} (median swap of {alias}, {size_gb:.3f} GB)"
              + (f"; {skipped}" if skipped else ""))
    return LoadPathChoice(best, reason, median_s)


def choose_load_path(engine: Any, alias: str, rounds: int = 3,
                     log: Callable[[str], None] = print) -> LoadPathChoice:
    """Time every copy mode on ``alias`` with ``engine`` (host cache on, copy mode pageable, so
    that its host copy is not pinned on reading) and choose; the host copy is evicted after."""
    engine.prefetch(alias)
    try:
        times = time_copy_modes(engine, alias, rounds, log=log)
        return choose(times, alias, engine.host.get(alias).size_gb)
    finally:
        engine.evict(alias)  # unpinned first
