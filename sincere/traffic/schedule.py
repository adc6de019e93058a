"""A run's precomputed arrival schedule: when each request leaves, for which model and prompt.

Built once by `sincere.traffic.patterns.build_schedule` from a seed, saved with the run as
schedule.csv, and replayed alike by the traffic generator and the simulator.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sincere.files import CsvWriter
from sincere.schemas import SCHEDULE_COLUMNS


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
