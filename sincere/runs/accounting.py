"""What became of a run's requests (SPEC sections 2 and 4): the one definition of its books.

Server side (the server, the simulator, the runner's check, the summaries): every request the
server received ends with one status, and issued = received = ok + rejected + failed +
unserved + shed when nothing was lost on the way. Client side (a server that is not SINCERE's):
what the generator saw, by HTTP status, and the requests never answered (lost).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sincere.runs.rundirs import RunDirError, read_client, read_csv, read_schedule
from sincere.schemas import REQUEST_SCHEMA, REQUEST_STATUSES

# run.json's accounting: the generator's count, the server's, and one count per final status
# (status ok is counted as completed).
SERVER_BOOKS = ("issued", "received", "completed", "rejected", "failed", "unserved", "shed")
CLIENT_BOOKS = ("issued", "answered", "completed", "rejected", "failed", "lost")


def server_books(statuses: Mapping[str, int], received: int,
                 issued: int | None) -> dict[str, int | None]:
    """run.json's ``accounting`` from the count of each final status: ``issued`` as the
    generator said (None when it did not), ``received`` as the server recorded."""
    return {"issued": issued, "received": int(received),
            "completed": int(statuses.get("ok", 0)),
            **{status: int(statuses.get(status, 0)) for status in REQUEST_STATUSES[1:]}}


def books_of_statuses(statuses: Iterable[str], issued: int | None) -> dict[str, int | None]:
    """``server_books`` of the recorded statuses (one per request received)."""
    counts = Counter(statuses)
    return server_books(counts, sum(counts.values()), issued)


def books_add_up(books: Mapping[str, Any]) -> bool:
    """Whether issued = completed + rejected + failed + unserved + shed."""
    parts = [books.get(k) for k in SERVER_BOOKS[2:]]
    issued = books.get("issued")
    return _is_count(issued) and all(map(_is_count, parts)) and sum(parts) == issued


def client_books(http_status: np.ndarray, issued: int) -> dict[str, int]:
    """A client-side run's books from each sent request's HTTP status (NaN: never answered):
    200 completed, 4xx rejected, 5xx failed, no answer lost."""
    answered = int(np.isfinite(http_status).sum())
    return {"issued": int(issued), "answered": answered,
            "completed": int((http_status == 200).sum()),
            "rejected": int(((http_status >= 400) & (http_status < 500)).sum()),
            "failed": int((http_status >= 500).sum()),
            "lost": int(issued) - answered}


def http_statuses(client: pd.DataFrame) -> np.ndarray:
    """client.csv's ``http_status`` as floats (NaN where the request was never answered)."""
    return pd.to_numeric(client["http_status"], errors="coerce").to_numpy(float)


def issued_count(accounting: Mapping[str, Any], client_rows: int | None, received: int,
                 warnings: list[str], source: str) -> int:
    """How many requests the generator sent: run.json's accounting ``issued``, else the rows
    of client.csv, else the rows of requests.csv; never fewer than requests.csv holds."""
    issued = accounting.get("issued")
    where = f"{source} accounting 'issued'"
    parts = [accounting.get(k, 0) for k in SERVER_BOOKS[2:]]
    if _is_count(issued) and all(map(_is_count, parts)) and sum(parts) != issued:
        warnings.append(f"{where}: {issued} != completed + rejected + failed + unserved + shed "
                        f"= {sum(parts)}")
    if not _is_count(issued):
        issued, where = (client_rows, "client.csv") if client_rows is not None else (received, "")
    if issued < received:
        warnings.append(f"{where}: {issued} requests issued but requests.csv has {received} "
                        "rows; using requests.csv")
        issued = received
    return int(issued)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ids(frame: pd.DataFrame | None) -> list[str]:
    return [] if frame is None else frame["request_id"].astype(str).tolist()


def _read_or_none(read: Any, run_dir: Path, problems: list[str]) -> pd.DataFrame | None:
    try:
        return read(run_dir)
    except RunDirError as exc:
        problems.append(str(exc))
        return None


def check_server_run(run_dir: Path) -> dict[str, Any]:
    """A real run's books checked from its files: every issued request (schedule.csv) in
    requests.csv exactly once with a known status and answered in client.csv, and issued =
    received; ``{"ok", "counts" (SERVER_BOOKS), "problems"}``."""
    problems: list[str] = []
    schedule = _read_or_none(read_schedule, run_dir, problems)
    client = _read_or_none(read_client, run_dir, problems)
    requests = _read_or_none(
        lambda d: read_csv(d / "requests.csv", {c: REQUEST_SCHEMA[c] for c in
                                               ("request_id", "status")}, ("request_id",)),
        run_dir, problems) if (run_dir / "requests.csv").is_file() else None
    issued_ids, client_ids, server_ids = _ids(schedule), _ids(client), _ids(requests)
    statuses = ([] if requests is None or "status" not in requests
                else requests["status"].fillna("").astype(str).tolist())
    per_id = Counter(server_ids)
    missing = [i for i in issued_ids if per_id[i] == 0]
    if missing:
        problems.append(f"{len(missing)} issued requests not in requests.csv (e.g. {missing[0]})")
    doubled = [i for i, n in per_id.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} request ids more than once in requests.csv")
    unanswered = sorted(set(issued_ids) - set(client_ids))
    if unanswered:
        problems.append(f"{len(unanswered)} issued requests not in client.csv")
    strangers = sorted(set(per_id) - set(issued_ids))
    if strangers:
        problems.append(f"{len(strangers)} requests in requests.csv that were not issued")
    bad = sorted(s for s in set(statuses) if s not in REQUEST_STATUSES)
    if bad:
        problems.append(f"unknown status(es) in requests.csv: {', '.join(bad)}")
    counts = books_of_statuses(statuses, len(issued_ids))
    if counts["issued"] != counts["received"]:
        problems.append(f"issued {counts['issued']} != received {counts['received']}")
    return {"ok": not problems, "counts": counts, "problems": problems}


def check_client_run(run_dir: Path) -> dict[str, Any]:
    """A client-side run's books checked from its files: every scheduled request once in
    client.csv (the server's side cannot be seen); ``{"ok", "counts" (CLIENT_BOOKS),
    "problems"}``."""
    problems: list[str] = []
    schedule = _read_or_none(read_schedule, run_dir, problems)
    client = _read_or_none(read_client, run_dir, problems)
    issued_ids, client_ids = _ids(schedule), _ids(client)
    per_id = Counter(client_ids)
    missing = [i for i in issued_ids if per_id[i] == 0]
    if missing:
        problems.append(f"{len(missing)} issued requests not in client.csv (e.g. {missing[0]})")
    doubled = sorted(i for i, n in per_id.items() if n > 1)
    if doubled:
        problems.append(f"{len(doubled)} request ids more than once in client.csv")
    status = http_statuses(client) if client is not None and "http_status" in client else \
        np.full(len(client_ids), np.nan)
    return {"ok": not problems, "counts": client_books(status, len(issued_ids)),
            "problems": problems}
