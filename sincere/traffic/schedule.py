"""A run's precomputed arrival schedule: when each request leaves, for which model and prompt.

Built once by `sincere.traffic.schedule.build_schedule` from a seed, saved with the run as
schedule.csv, and replayed alike by the traffic generator and the simulator.
"""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sincere.files import CsvWriter
from sincere.schemas import SCHEDULE_COLUMNS
from sincere.traffic.patterns import generate_arrivals


@dataclass(frozen=True, eq=False)
class Schedule:
    """A run's precomputed requests, in send order; request i is `r{i:06d}`."""

    scheduled_s: np.ndarray  # float64, ascending, seconds since run start
    models: tuple[str, ...]  # model alias per request
    prompt_ids: tuple[str, ...]  # prompt id per request ("" when no prompt set given)
    prompt_tokens: tuple[int | None, ...]  # known prompt lengths (trace replay) else None
    params: dict = field(default_factory=dict)  # pattern and every parameter used, for run.json

    def __post_init__(self) -> None:
        times_s = np.array(self.scheduled_s, dtype=np.float64)  # a private, read-only copy
        times_s.flags.writeable = False
        object.__setattr__(self, "scheduled_s", times_s)
        for name in ("models", "prompt_ids", "prompt_tokens"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n = times_s.size
        if times_s.ndim != 1 or not (len(self.models) == len(self.prompt_ids)
                                     == len(self.prompt_tokens) == n):
            raise ValueError(
                f"Schedule columns differ in length: {n} times, {len(self.models)} models, "
                f"{len(self.prompt_ids)} prompt ids, {len(self.prompt_tokens)} prompt token counts")
        if n and (not np.all(np.isfinite(times_s)) or np.any(np.diff(times_s) < 0)):
            raise ValueError("Schedule times must be finite and ascending")

    def __len__(self) -> int:
        return int(self.scheduled_s.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (np.array_equal(self.scheduled_s, other.scheduled_s)
                and self.models == other.models and self.prompt_ids == other.prompt_ids
                and self.prompt_tokens == other.prompt_tokens and self.params == other.params)

    __hash__ = None  # type: ignore[assignment]  # holds a dict and an array

    def request_ids(self) -> list[str]:
        """The ids that join this schedule to client.csv and requests.csv."""
        return [f"r{i:06d}" for i in range(len(self))]

    def write_csv(self, path: Path) -> None:
        """Save as CSV (``sincere.files.CsvWriter``: times to the microsecond)."""
        with CsvWriter(path, SCHEDULE_COLUMNS, flush_each_row=False) as writer:
            writer.write_many(
                dict(zip(SCHEDULE_COLUMNS, row, strict=True)) for row in zip(
                    self.request_ids(), self.scheduled_s.tolist(), self.models, self.prompt_ids,
                    self.prompt_tokens, strict=True))

    @classmethod
    def read_csv(cls, path: Path) -> Schedule:
        """Load a schedule written by `write_csv` (params are not in the CSV: they are {})."""
        path = Path(path)
        times_s: list[float] = []
        models: list[str] = []
        prompt_ids: list[str] = []
        prompt_tokens: list[int | None] = []
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = set(SCHEDULE_COLUMNS[:4]) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: schedule CSV lacks columns {sorted(missing)}")
            for index, row in enumerate(reader):
                where = f"{path}, line {reader.line_num}"
                if row["request_id"] != f"r{index:06d}":
                    raise ValueError(f"{where}: expected request_id r{index:06d}, "
                                     f"got {row['request_id']!r}")
                try:
                    times_s.append(float(row["scheduled_s"]))
                    tokens = (row.get("prompt_tokens") or "").strip()
                    prompt_tokens.append(int(tokens) if tokens else None)
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from None
                models.append(row["model"])
                prompt_ids.append(row["prompt_id"] or "")
        return cls(np.array(times_s, dtype=np.float64), tuple(models), tuple(prompt_ids),
                   tuple(prompt_tokens), {})


def _normalised_mix(model_mix: Mapping[str, float]) -> dict[str, float]:
    """Model mix weights as probabilities; rejects empty, negative, non-finite and all-zero."""
    if not model_mix:
        raise ValueError("model_mix is empty: give at least one model with a positive weight")
    bad = {model: weight for model, weight in model_mix.items()
           if not (isinstance(weight, numbers.Real) and math.isfinite(weight) and weight >= 0)}
    if bad:
        raise ValueError(f"model_mix weights must be finite and >= 0, got {bad}")
    total = float(sum(model_mix.values()))
    if total <= 0:
        raise ValueError(f"model_mix weights are all zero: {dict(model_mix)}")
    return {str(model): float(weight) / total for model, weight in model_mix.items()}


def build_schedule(pattern: str, mean_rps: float, duration_s: float, seed: int,
                   model_mix: Mapping[str, float], prompt_ids: Sequence[str] | None = None,
                   **options: Any) -> Schedule:
    """A run's whole schedule from a seed: arrival times by `pattern`, then a model per request
    by the categorical `model_mix` (weights normalised) and a prompt drawn uniformly, with
    replacement, from `prompt_ids` ("" for every request when None).

    Times, models and prompts use three independent streams of `SeedSequence(seed)`, so changing
    the mix or the prompt set never moves the arrivals. Synthetic patterns need mean_rps > 0; for
    'trace' (option `trace_path`), mean_rps > 0 rescales the trace to that mean rate and 0 or
    None keeps its own timing (see `trace_arrivals`). Pattern options: `pattern_options(name)`.
    """
    time_seed, model_seed, prompt_seed = np.random.SeedSequence(seed).spawn(3)
    mix = _normalised_mix(model_mix)
    if prompt_ids is not None and len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: pass None to schedule without prompts")
    arrivals, used = generate_arrivals(pattern, mean_rps, duration_s,
                                       np.random.default_rng(time_seed), options)
    n = int(arrivals.times_s.size)

    names = list(mix)
    choice = np.random.default_rng(model_seed).choice(len(names), size=n, p=list(mix.values()))
    models = tuple(names[i] for i in choice.tolist())
    if prompt_ids is None:
        prompts = ("",) * n
    else:
        picks = np.random.default_rng(prompt_seed).integers(0, len(prompt_ids), size=n)
        prompts = tuple(str(prompt_ids[i]) for i in picks.tolist())
    prompt_tokens = tuple(arrivals.prompt_tokens) if arrivals.prompt_tokens is not None \
        else (None,) * n

    params = {
        "pattern": pattern.strip().lower(),
        "mean_rps": None if mean_rps is None else float(mean_rps),
        "duration_s": float(duration_s) if math.isfinite(duration_s) else None,
        "seed": int(seed),
        "model_mix": mix,
        "prompt_count": 0 if prompt_ids is None else len(prompt_ids),
        **{name: _jsonable(value) for name, value in used.items()},
        **{name: _jsonable(value) for name, value in arrivals.info.items()},
        "requests": n,
    }
    return Schedule(arrivals.times_s, models, prompts, prompt_tokens, params)


def _jsonable(value: Any) -> Any:
    """Paths as strings, numpy scalars as Python numbers, so params go straight into run.json."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
