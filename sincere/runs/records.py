"""Records of a run: requests.csv and batches.csv rows, written as they happen, and run.json.

The server and the simulator build the same records from the same functions, so results
processing reads real and simulated runs alike. Only lengths and token counts are recorded.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sincere.scheduling.queues import Request
from sincere.schemas import BATCH_COLUMNS, REQUEST_COLUMNS


@dataclass(frozen=True)
class BatchRecord:
    batch_id: int
    model: str
    batch_size: int
    reason: str
    dispatch_s: float
    swap_from: str | None
    swap_s: float
    start_s: float
    end_s: float
    processing_s: float
    output_tokens: int
    retries: int = 0


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    model: str
    arrival_s: float
    status: str
    sla_s: float
    dispatch_s: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    batch_id: int | None = None
    batch_size: int | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None

    def row(self) -> dict[str, Any]:
        """The requests.csv row: timing parts derived here, empty where the request never ran."""
        ran = self.end_s is not None and self.start_s is not None and self.dispatch_s is not None
        latency_s = self.end_s - self.arrival_s if ran else None
        return {
            **as_row(self),
            "queue_wait_s": self.dispatch_s - self.arrival_s if ran else None,
            "swap_wait_s": self.start_s - self.dispatch_s if ran else None,
            "processing_s": self.end_s - self.start_s if ran else None,
            "latency_s": latency_s,
            "sla_met": bool(self.status == "ok" and latency_s is not None
                            and latency_s <= self.sla_s),
        }


def as_row(record: BatchRecord | RequestRecord) -> dict[str, Any]:
    """A record's fields as a dict (``dataclasses.asdict`` deep-copies, too slow per row)."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def settled(request: Request, status: str, sla_s: float) -> RequestRecord:
    """The record of a request that never ran (rejected, failed before running, unserved)."""
    return RequestRecord(request.request_id, request.model, request.arrival_s, status, sla_s,
                         prompt_tokens=request.prompt_tokens)


def served(request: Request, batch: BatchRecord, sla_s: float, status: str = "ok",
           output_tokens: int | None = None, prompt_tokens: int | None = None) -> RequestRecord:
    """The record of a request that ran in ``batch``."""
    return RequestRecord(
        request.request_id, request.model, request.arrival_s, status, sla_s,
        dispatch_s=batch.dispatch_s, start_s=batch.start_s, end_s=batch.end_s,
        batch_id=batch.batch_id, batch_size=batch.batch_size,
        prompt_tokens=prompt_tokens if prompt_tokens is not None else request.prompt_tokens,
        output_tokens=output_tokens)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return value


class CsvLog:
    """A CSV file with a fixed header, one row per record, optionally flushed per row."""

    def __init__(self, path: Path, columns: Sequence[str], flush_each_row: bool = True) -> None:
        self.path = path
        self.columns = list(columns)
        self.flush_each_row = flush_each_row
        self._file: TextIO = path.open("w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.columns)
        self._file.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow([_cell(row.get(c)) for c in self.columns])
        if self.flush_each_row:
            self._file.flush()

    def write_many(self, rows: Iterable[dict[str, Any]]) -> None:
        self._writer.writerows([_cell(row.get(c)) for c in self.columns] for row in rows)
        self._file.flush()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class RunRecorder:
    """requests.csv and batches.csv of one run directory."""

    def __init__(self, run_dir: Path, flush_each_row: bool = True) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.requests = CsvLog(run_dir / "requests.csv", REQUEST_COLUMNS, flush_each_row)
        self.batches = CsvLog(run_dir / "batches.csv", BATCH_COLUMNS, flush_each_row)

    def request(self, record: RequestRecord) -> None:
        self.requests.write(record.row())

    def batch(self, record: BatchRecord) -> None:
        self.batches.write(as_row(record))

    def close(self) -> None:
        self.requests.close()
        self.batches.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
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
