"""The grid's plan before it runs, and its progress while it runs: how long each run should
take, how long the runs to do should take on the run slots there are, and, as runs finish, the
time elapsed and the time left.

A run is expected to take its traffic (``duration_s``), the drain after it and its start-up
and close (the server reading the models and warming up, the files written). The drain comes
from the profile: a run whose mean rate exceeds what the engine serves at its best batches
(without swaps) ends with a backlog, at most the server's queue limit (and with shedding, at
most what can still meet its SLA), served at that rate for at most the drain timeout; a run
within capacity ends with its last batch. The start-up is measured on the runs already in the
results folder (wall time less traffic and drain), else a guess by engine. While the grid runs,
the time left is the expected time of the runs left, scaled by how long the finished runs took
against their expectation. Arithmetic only, on an injected clock; run_experiments.py prints it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sincere.grid.points import (
    GridPoint,
    GridRun,
    PlannedRun,
    cc_name,
    read_previous_run,
    runs_to_do,
)
from sincere.profiles.profile_set import ProfileSet
from sincere.runs.identity import run_identity

# A run's start-up and close before one has been measured here, seconds: the tiny models on a
# CPU (38-46 s measured on this project's loaded 2-core machine); on a GPU, reading 47 GB of
# weights into host RAM and pinning them, and for the static engine its warm-up compiles too
# (5-7 compiles on the tiny models; 41-57 s for a first compile on the reference H100, cached
# ones quicker); against a server it does not start, only the generator's. Guesses: the
# progress lines correct them from the first run on, and a rerun's plan measures them.
STARTUP_GUESS_S = {"cpu": 45.0, "eager": 90.0, "static": 300.0, "external": 10.0}
# Bytes a run writes per request (requests.csv, client.csv, schedule.csv, batches.csv, about
# 300 measured) and per second of run (monitor.csv at its 0.5 s period, about 180 measured).
RESULT_BYTES_PER_REQUEST = 400
RESULT_BYTES_PER_S = 250


def startup_guess_s(gpu: bool, decode: str, external: bool = False) -> float:
    """STARTUP_GUESS_S for an engine on a GPU (by its decode), on a CPU, or for a grid sent to
    a server it does not start."""
    if external:
        return STARTUP_GUESS_S["external"]
    return STARTUP_GUESS_S[decode if gpu and decode in ("eager", "static") else "cpu"]


@dataclass(frozen=True)
class Capacity:
    """What the engine of a profile serves: requests per second at each model's best batch,
    weighted by the model mix, without swaps; and the longest of those batches."""

    rps: float
    batch_s: float


def capacity(profiles: ProfileSet, model_mix: Mapping[str, float],
             max_new_tokens: int) -> Capacity:
    """The Capacity of ``profiles`` for this mix (a model the profile lacks raises
    ProfileError: every run would fail without it)."""
    total = sum(model_mix.values())
    seconds_per_request = sum(share / total * profiles[m].least_time_per_request_s(max_new_tokens)
                              for m, share in model_mix.items())
    longest = max(profiles[m].processing_s(profiles[m].best_batch(max_new_tokens), max_new_tokens)
                  for m in model_mix)
    return Capacity(1.0 / seconds_per_request, longest)


def expected_drain_s(mean_rps: float, sla_s: float, duration_s: float, served: Capacity,
                     drain_timeout_s: float, max_queue: int = 0, sheds: bool = False) -> float:
    """Seconds from the end of the traffic to the last completion, expected (see the module's
    docstring): the backlog the traffic leaves, served at capacity, plus the last batch."""
    backlog = max(0.0, (mean_rps - served.rps) * duration_s)
    if max_queue:
        backlog = min(backlog, float(max_queue))
    if sheds:
        backlog = min(backlog, served.rps * sla_s)
    return min(drain_timeout_s, served.batch_s + backlog / served.rps)


@dataclass(frozen=True)
class Startup:
    """A run's start-up and close, seconds, and how many runs measured it (0: a guess)."""

    seconds: float
    measured_runs: int = 0

    def describe(self) -> str:
        how = (f"measured on {self.measured_runs} run{'s' * (self.measured_runs != 1)}"
               if self.measured_runs else "a guess, until a run is measured")
        return f"{self.seconds:.0f} s start-up and close ({how})"


def measured_startup(runs: Iterable[Mapping[str, Any]]) -> Startup | None:
    """The median start-up and close of finished runs (their run.json: wall time less the
    traffic and drain the server timed), or None when none has both."""
    overheads = [run["wall_time_s"] - run["run_time_s"] for run in runs
                 if run.get("status") == "complete"
                 and isinstance(run.get("wall_time_s"), (int, float))
                 and isinstance(run.get("run_time_s"), (int, float))]
    if not overheads:
        return None
    return Startup(max(0.0, statistics.median(overheads)), len(overheads))


@dataclass(frozen=True)
class RunCost:
    """What one run is expected to take, seconds; ``drain_s`` None when there is no profile
    to expect it from (counted as 0, at most the drain timeout)."""

    traffic_s: float
    drain_s: float | None
    startup_s: float

    @property
    def expected_s(self) -> float:
        return self.traffic_s + (self.drain_s or 0.0) + self.startup_s


def grid_seconds(costs: Mapping[str, Sequence[float]], slots: Mapping[str, float]) -> float:
    """Wall seconds of each CC mode's runs on that mode's run slots (the work shared evenly),
    the modes side by side: the longest of them."""
    return max((sum(seconds) / max(1.0, min(slots.get(mode, 1.0), len(seconds)))
                for mode, seconds in costs.items() if seconds), default=0.0)


def results_gb(points: Iterable[GridPoint], duration_s: float, drain_s: float = 0.0) -> float:
    """Gigabytes the runs of ``points`` write (RESULT_BYTES_PER_REQUEST and _PER_S)."""
    duration_s = duration_s if math.isfinite(duration_s) else 0.0
    return sum(p.mean_rps * duration_s * RESULT_BYTES_PER_REQUEST
               + (duration_s + drain_s) * RESULT_BYTES_PER_S for p in points) / 1e9


def format_duration(seconds: float) -> str:
    """``45 s``, ``12m05s``, ``3h07m``, ``2d04h``: short, for a progress line."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_hours(seconds: float) -> str:
    """``112.9 h (4.7 days)``, ``5.2 h``, ``32 min``: a plan's duration, in hours from one."""
    hours = seconds / 3600
    if hours >= 24:
        return f"{hours:.1f} h ({hours / 24:.1f} days)"
    return f"{hours:.1f} h" if hours >= 1 else f"{seconds / 60:.0f} min"


def estimate_lines(costs: Mapping[str, Sequence[RunCost]], slots: Mapping[str, float],
                   drain_timeout_s: float, served: Capacity | None, startup: Startup) -> list[str]:
    """The plan's lines on duration: what a run takes, and the runs to do in all (on ``slots``
    run slots per CC mode)."""
    runs = [cost for mode_costs in costs.values() for cost in mode_costs]
    if not runs:
        return ["nothing to run: every run is done"]
    traffic_s = runs[0].traffic_s
    if not math.isfinite(traffic_s):
        return [f"{len(runs)} runs to do, each as long as its trace: no estimate"]
    if served is None:
        drain = f"the drain (not expected without a profile; at most {drain_timeout_s:g} s)"
    else:
        low, high = min(c.drain_s or 0.0 for c in runs), max(c.drain_s or 0.0 for c in runs)
        span = f"{low:.0f} s" if round(low) == round(high) else f"{low:.0f}-{high:.0f} s"
        drain = (f"{span} of drain (expected: the profile serves {served.rps:.1f} requests/s "
                 "without swaps)")
    expected = grid_seconds({m: [c.expected_s for c in cs] for m, cs in costs.items()}, slots)
    bound = grid_seconds({m: [c.traffic_s + drain_timeout_s + c.startup_s for c in cs]
                          for m, cs in costs.items()}, slots)
    at_once = sum(max(1.0, min(slots.get(m, 1.0), len(cs))) for m, cs in costs.items() if cs)
    return [f"a run: {traffic_s:g} s of traffic + {drain} + {startup.describe()}",
            f"estimated {format_hours(expected)} for the {len(runs)} runs to do, "
            f"{'one at a time' if at_once <= 1 else f'{at_once:g} at once'} (at most "
            f"{format_hours(bound)} if every run drained for {drain_timeout_s:g} s)"]


@dataclass
class Progress:
    """The grid's progress as runs finish: runs done, time elapsed, time left.

    ``expected_s`` holds each run to do (by label) and its expected seconds; the time left is
    the expected seconds of the runs not finished, times the ratio of the measured to the
    expected seconds of the completed ones (failed runs end early and say nothing of the
    others' length), shared over ``slots`` runs at once.
    """

    expected_s: Mapping[str, float]
    slots: float = 1.0
    clock: Callable[[], float] = time.monotonic
    started_s: float = field(init=False)
    finished: dict[str, float | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.started_s = self.clock()

    def finish(self, label: str, wall_s: float, complete: bool = True) -> str:
        """Record a finished run (its measured wall seconds); the progress, as a line's end:
        ``elapsed 1h02m, about 3h10m left``."""
        self.finished[label] = wall_s if complete else None
        return f"elapsed {format_duration(self.elapsed_s())}, " + (
            f"about {format_duration(self.left_s())} left"
            if len(self.finished) < len(self.expected_s) else "all runs done")

    def elapsed_s(self) -> float:
        return self.clock() - self.started_s

    def left_s(self) -> float:
        measured = {label: s for label, s in self.finished.items() if s is not None}
        expected_done = sum(self.expected_s.get(label, 0.0) for label in measured)
        ratio = sum(measured.values()) / expected_done if expected_done > 0 else 1.0
        left = [s for label, s in self.expected_s.items() if label not in self.finished]
        return sum(left) * ratio / max(1.0, min(self.slots, len(left)))


@dataclass
class GridPlan:
    """A grid's runs, those to do, and what they are expected to take; printed before the
    first run, and the progress of each run as it finishes.

    ``served`` is the engine's Capacity from the profile the servers plan with (None: no
    profile, no drain expected); ``startup_guess_s`` stands for a run's start-up until a run
    in the results folder has measured it; ``say`` prints a line.
    """

    runs: Sequence[GridRun]
    duration_s: float
    drain_timeout_s: float
    max_queue: int = 0
    served: Capacity | None = None
    startup_guess_s: float = STARTUP_GUESS_S["cpu"]
    say: Callable[[str], None] = print
    todo: list[GridRun] = field(default_factory=list)
    progress: Progress | None = None

    def choose(self, identity: Callable[[GridRun], dict[str, Any]] | None,
               overwrite: bool = False, retry_failed: bool = True) -> list[GridRun]:
        """The runs to make: those not finished with the parameters ``identity`` gives
        (RunConflict when a finished one was made with others); every run when the identity
        is not known yet (None: no profile set to name)."""
        if identity is None:
            self.todo = list(self.runs)
        else:
            wanted = {planned.run_id for planned in runs_to_do(
                [PlannedRun(run.label, run.run_dir, run_identity(identity(run)))
                 for run in self.runs], overwrite, retry_failed)}
            self.todo = [run for run in self.runs if run.label in wanted]
        return self.todo

    def startup(self) -> Startup:
        """The start-up measured on the finished runs in the results folder, else the guess."""
        found = (read_previous_run(run.run_dir) for run in self.runs)
        return measured_startup(run for run in found if run) or Startup(self.startup_guess_s)

    def cost(self, run: GridRun, startup: Startup, sheds: bool) -> RunCost:
        drain_s = None if self.served is None else expected_drain_s(
            run.point.mean_rps, run.point.sla_s, self.duration_s, self.served,
            self.drain_timeout_s, self.max_queue, sheds)
        return RunCost(self.duration_s, drain_s, startup.seconds)

    def announce(self, slots: Mapping[str, float], sheds: Callable[[GridRun], bool],
                 headline: str, machine: str = "") -> None:
        """Print the plan (``headline`` first, the ``machine`` it runs on, the runs per CC
        mode, and the estimate on ``slots`` run slots per mode); the progress lines count from
        here."""
        self.say(headline)
        if machine:
            self.say(machine)
        for mode in dict.fromkeys(run.cc_mode for run in self.runs if run.cc_mode):
            mine = sum(run.cc_mode == mode for run in self.runs)
            left = sum(run.cc_mode == mode for run in self.todo)
            self.say(f"{cc_name(mode)}: {mine} runs, {mine - left} done, {left} to do")
        startup = self.startup()
        costs = {run.label: self.cost(run, startup, sheds(run)) for run in self.todo}
        by_mode: dict[str, list[RunCost]] = {}
        for run in self.todo:
            by_mode.setdefault(run.cc_mode, []).append(costs[run.label])
        for line in estimate_lines(by_mode, slots, self.drain_timeout_s, self.served, startup):
            self.say(line)
        self.progress = Progress({label: cost.expected_s for label, cost in costs.items()},
                                 slots=sum(slots.values()) or 1.0)

    def finished(self, run: GridRun, result: Mapping[str, Any]) -> str:
        """Record a finished run; ``elapsed ..., about ... left`` for its line."""
        if self.progress is None:
            raise RuntimeError("announce the plan before the runs finish")
        return self.progress.finish(run.label, float(result.get("wall_time_s") or 0.0),
                                    result.get("status") == "complete")
