"""Settling a request: its row in requests.csv, its count, and the answer its caller waits for.

Every request the server receives ends here exactly once, with a status: ``ok`` or ``failed``
after its batch, ``rejected`` on arrival, ``shed``, ``unserved`` at the drain timeout. The
``Settler`` owns requests.csv and batches.csv (``sincere.runs.records.RunRecorder``) and the
counts run.json's accounting is made of; when to settle is decided by admission
(``sincere.serving.admission``), the model registry and the scheduler loop. Only counts and
lengths are written: the generated text goes to the waiting caller and nowhere else.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sincere.runs.records import BatchRecord, RequestRecord, RunRecorder, settled
from sincere.scheduling.queues import Request

log = logging.getLogger("sincere.serving")

# HTTP status a waiting caller gets for each final status of a request that was queued.
HTTP_STATUS = {"ok": 200, "failed": 500, "unserved": 503, "shed": 503}
SHED_ERROR = ("shed: the request can no longer complete within its SLA, even if its batch "
              "started now (SHED_LATE)")
DEFAULT_ERRORS = {"unserved": "not served before the drain timeout", "failed": "the batch failed"}
OUTCOME_FIELDS = ("request_id", "model", "status", "batch_id", "batch_size", "queue_wait_s",
                  "swap_wait_s", "processing_s", "latency_s", "sla_met", "prompt_tokens",
                  "output_tokens")
STATUSES = ("ok", "rejected", "failed", "unserved", "shed")


class Settler:
    """The run's records and counts, under one lock (taken after the queues' when both are)."""

    def __init__(self, run_dir: Path, sla_s: float) -> None:
        self.sla_s = sla_s
        self.recorder = RunRecorder(run_dir)
        self.lock = threading.Lock()
        self._counts = {"received": 0, **dict.fromkeys(STATUSES, 0)}

    def counts(self) -> dict[str, int]:
        """Requests received, and settled by status, so far."""
        with self.lock:
            return dict(self._counts)

    def received(self) -> int:
        with self.lock:
            return self._counts["received"]

    def note_received(self) -> None:
        """A request was queued (it is counted as received now, and settled later)."""
        with self.lock:
            self._counts["received"] += 1

    def settle(self, request: Request, status: str, error: str | None = None,
               http_status: int | None = None, on_arrival: bool = False) -> None:
        """Record a request that never ran; ``on_arrival``: it was refused as it came in (so
        it was never counted as received by being queued)."""
        record = settled(request, status, self.sla_s)
        self.record(record, on_arrival)
        if request.payload is not None:
            self.answer(request, record, error=error, http_status=http_status)

    def record(self, record: RequestRecord, on_arrival: bool = False) -> None:
        with self.lock:
            if self.recorder.requests.closed:  # after close(): nothing can be recorded now
                log.error("request refused after the records were closed: not recorded")
                return
            self.recorder.request(record)
            self._counts[record.status] += 1
            if on_arrival:  # a queued request was counted when it was queued
                self._counts["received"] += 1

    def record_batch(self, batch: BatchRecord) -> None:
        with self.lock:
            self.recorder.batch(batch)

    def answer(self, request: Request, record: RequestRecord, error: str | None = None,
               http_status: int | None = None) -> None:
        """Give the waiting caller its outcome (the record's fields, an HTTP status, an error)."""
        row = record.row()
        outcome = {k: row[k] for k in OUTCOME_FIELDS}
        outcome["http_status"] = http_status or HTTP_STATUS.get(record.status, 500)
        if error or record.status != "ok":
            outcome["error"] = error or DEFAULT_ERRORS.get(record.status, record.status)
        request.payload.outcome = outcome
        request.payload.done.set()

    def close(self) -> None:
        """Close requests.csv and batches.csv."""
        with self.lock:
            self.recorder.close()
