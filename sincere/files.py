"""Files at the lowest level, for every stage that writes one: the one CSV writer and its cell
format, atomic writes of text and strict JSON, and a file's digest.

Every CSV SINCERE writes (requests.csv, batches.csv, client.csv, monitor.csv, schedule.csv,
the profiles) goes through ``CsvWriter``, so a value reads back the same whichever file holds
it: an empty cell for a missing value (None, NaN or an infinity), a float rounded to 6 decimal
places (a microsecond for times) and written in its shortest form. Which files a run directory
holds and how to read them is ``sincere.runs``'s; profile files are ``sincere.profiles``'.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Self, TextIO

DIGEST_CHARS = 16  # hex digits kept of a sha256: a file's digest, a run's params hash
FLOAT_PLACES = 6  # decimal places of a float in a CSV cell


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None and non-finite floats empty, floats rounded to FLOAT_PLACES
    (numpy scalars as Python numbers); anything else as it is."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, FLOAT_PLACES) if math.isfinite(value) else ""
    return value


class CsvWriter:
    """A CSV file with a fixed header and one row per record (a mapping; missing columns empty,
    others ignored), flushed after each row unless ``flush_each_row`` is off, so that a crash
    keeps every row written so far."""

    def __init__(self, path: Path | str, columns: Sequence[str],
                 flush_each_row: bool = True) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.flush_each_row = flush_each_row
        self.rows_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.columns)
        self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row."""
        self._writer.writerow([csv_cell(row.get(c)) for c in self.columns])
        self.rows_written += 1
        if self.flush_each_row:
            self._file.flush()

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows, then flush."""
        cells = [[csv_cell(row.get(c)) for c in self.columns] for row in rows]
        self._writer.writerows(cells)
        self.rows_written += len(cells)
        self._file.flush()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON ``null``): strict JSON
    has no ``NaN`` or ``Infinity``, and pandas, jq and browsers refuse them. numpy scalars
    become Python numbers."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write strict JSON (no NaN or Infinity), atomically."""
    write_text_atomic(path, json.dumps(json_safe(payload), indent=2, sort_keys=False,
                                       default=str, allow_nan=False) + "\n")


@lru_cache(maxsize=64)
def file_digest(path: str) -> str:
    """sha256 of a file's bytes (first DIGEST_CHARS hex digits); the path itself when
    unreadable."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:DIGEST_CHARS]
    except OSError:
        return f"unreadable:{path}"
