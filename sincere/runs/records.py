"""Records of a run: requests.csv and batches.csv rows, written as they happen, and run.json.

The server and the simulator build the same records from the same functions, so results
processing reads real and simulated runs alike. Only lengths and token counts are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere.files import CsvWriter
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


class RunRecorder:
    """requests.csv and batches.csv of one run directory."""

    def __init__(self, run_dir: Path, flush_each_row: bool = True) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.requests = CsvWriter(run_dir / "requests.csv", REQUEST_COLUMNS, flush_each_row)
        self.batches = CsvWriter(run_dir / "batches.csv", BATCH_COLUMNS, flush_each_row)

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
