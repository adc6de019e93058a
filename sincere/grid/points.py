"""The experiment grid: its cells, run ids and seeds, shared by the simulator and the runner."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere.runs.identity import differences, params_hash, run_identity
from sincere.runs.rundirs import RunDirError, read_run_json
from sincere.scheduling.strategies import STRATEGIES, strategy_slug


@dataclass(frozen=True)
class GridPoint:
    strategy: str
    pattern: str
    mean_rps: float
    sla_s: float
    repeat: int

    @property
    def run_id(self) -> str:
        """``bestbatch-timer__gamma__rate4__sla40__rep0``: readable, unique within a grid."""
        return (f"{strategy_slug(self.strategy)}__{self.pattern}__rate{self.mean_rps:g}"
                f"__sla{self.sla_s:g}__rep{self.repeat}")

    def seed(self, base_seed: int) -> int:
        """The arrival seed: the same for every strategy and SLA of a pattern, rate and repeat,
        so strategies are compared on the very same arrivals."""
        return base_seed + self.repeat


CC_MODES = ("on", "off")  # the confidential-computing modes a grid can ask its machines for


def cc_name(cc_mode: str) -> str:
    """``cc_on`` / ``cc_off``: the results folder of a CC mode's runs, and the Ray resource its
    nodes advertise."""
    return f"cc_{cc_mode}"


@dataclass(frozen=True)
class GridRun:
    """One run to make: a grid point, the CC mode its machine must have ("" = any machine),
    and the folder its run directory goes in."""

    point: GridPoint
    results_dir: Path
    cc_mode: str = ""

    @property
    def run_dir(self) -> Path:
        return self.results_dir / self.point.run_id

    @property
    def label(self) -> str:
        """The run as the progress lines name it: ``cc_on/<run_id>``, or ``<run_id>``."""
        return f"{cc_name(self.cc_mode)}/{self.point.run_id}" if self.cc_mode else self.point.run_id


def grid_runs(points: Sequence[GridPoint], results_dir: Path,
              cc_modes: Sequence[str] = ()) -> list[GridRun]:
    """Every point once per CC mode, both modes of a point one after the other, each mode's
    runs in ``RESULTS_DIR/cc_<mode>/`` (process_results.py pairs them by the mode in their
    run.json); without modes, every point once in ``RESULTS_DIR/`` as on one machine."""
    unknown = [m for m in cc_modes if m not in CC_MODES]
    if unknown:
        raise ValueError(f"unknown CC mode(s) {', '.join(unknown)}; known: {', '.join(CC_MODES)}")
    if not cc_modes:
        return [GridRun(p, results_dir) for p in points]
    modes = list(dict.fromkeys(cc_modes))
    return [GridRun(p, results_dir / cc_name(m), m) for p in points for m in modes]


def expand_grid(strategies: Sequence[str], patterns: Sequence[str], means_rps: Sequence[float],
                slas_s: Sequence[float], repeats: int) -> list[GridPoint]:
    """Every cell × repeat, in a stable order; unknown strategy names are refused up front."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    return [GridPoint(s, p, float(m), float(sla), r)
            for r, p, m, sla, s in itertools.product(range(repeats), patterns, means_rps, slas_s,
                                                     strategies)]


def read_previous_run(run_dir: Path) -> dict[str, Any] | None:
    """The run.json a finished attempt left in ``run_dir``, or None (none, or unreadable)."""
    try:
        return read_run_json(run_dir)
    except RunDirError:
        return None


def run_is_complete(run_dir: Path) -> bool:
    """True when the run directory holds a run.json that says the run completed."""
    run = read_previous_run(run_dir)
    return run is not None and run.get("status") == "complete"


class RunConflict(ValueError):
    """Finished runs in the results folder were made with other parameters."""


@dataclass(frozen=True)
class PlannedRun:
    """A run the grid wants, where it goes, and what it will be (its identity)."""

    run_id: str
    run_dir: Path
    identity: dict[str, Any]


def runs_to_do(planned: Sequence[PlannedRun], overwrite: bool = False,
               retry_failed: bool = True) -> list[PlannedRun]:
    """The runs to run: all with ``overwrite``; else those not finished with these parameters.

    A finished run (complete, or failed when ``retry_failed`` is off) is reused only when its
    identity is this run's; one made with other parameters is never reused silently: RunConflict
    names the parameters that differ and the two ways on.
    """
    if overwrite:
        return list(planned)
    todo, conflicts = [], []
    for run in planned:
        previous = read_previous_run(run.run_dir)
        finished = previous is not None and (
            previous.get("status") == "complete" or (not retry_failed
                                                     and previous.get("status") is not None))
        if not finished:
            todo.append(run)
            continue
        found = previous.get("identity") if isinstance(previous.get("identity"), dict) \
            else run_identity(previous.get("params") or {})
        if params_hash(found) != params_hash(run.identity):
            conflicts.append((run, differences(run.identity, found)))
    if conflicts:
        run, changed = conflicts[0]
        folder = run.run_dir.parent
        raise RunConflict(
            f"{len(conflicts)} finished run(s) in {folder}/ were made with other parameters, "
            f"e.g. {run.run_id}: {'; '.join(changed) or 'an older run.json'} (found -> asked). "
            f"Write into another folder (--results-dir DIR), or redo them with --overwrite true.")
    return todo
