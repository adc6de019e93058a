"""Find and read run directories (SPEC section 2) robustly: run.json and every CSV, with the
dtypes of ``sincere.schemas``, for the summaries, the runner and the grid alike.

A run directory is any folder holding a ``run.json``. A missing or malformed file raises
`RunDirError` naming the file; `sincere.results.summary` turns that into a warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sincere.schemas import (
    BATCH_SCHEMA,
    CLIENT_SCHEMA,
    MONITOR_SCHEMA,
    REQUEST_SCHEMA,
    SCHEDULE_SCHEMA,
)

RUN_FILE = "run.json"

# The columns each reader reads (others are left on disk), with their dtypes from the schemas.
REQUEST_READ = ("request_id", "model", "arrival_s", "dispatch_s", "start_s", "end_s",
                "batch_id", "queue_wait_s", "swap_wait_s", "processing_s", "sla_met", "status",
                "prompt_tokens", "output_tokens")
REQUIRED_REQUEST_COLUMNS = ("model", "arrival_s", "end_s", "sla_met", "status")
BATCH_READ = ("batch_id", "model", "batch_size", "reason", "dispatch_s", "swap_from", "swap_s",
              "start_s", "end_s", "processing_s")
REQUIRED_BATCH_COLUMNS = ("model", "swap_s", "start_s", "end_s", "processing_s")
MONITOR_READ = ("t_s", "gpu_util_pct")
REQUIRED_CLIENT_COLUMNS = ("request_id", "received_s", "client_latency_s", "http_status")
SCHEDULE_READ = ("request_id", "scheduled_s", "model")


def _dtypes(schema: dict[str, str], columns: Sequence[str]) -> dict[str, str]:
    return {c: schema[c] for c in columns}


class RunDirError(Exception):
    """A file of a run directory is missing or malformed; the message names the file."""


def find_run_dirs(roots: Iterable[Path | str], max_depth: int = 2) -> list[Path]:
    """Every folder holding a run.json: each root itself, or up to ``max_depth`` levels below;
    hidden folders (the runner's ``.partial`` staging area) are passed over."""
    found: list[Path] = []
    for root in map(Path, roots):
        level = [root]
        for _ in range(max_depth + 1):
            found.extend(d for d in level if (d / RUN_FILE).is_file())
            level = sorted(child for d in level if not (d / RUN_FILE).is_file()
                           for child in _subfolders(d))
    unique = dict.fromkeys(p.resolve() for p in found)
    return list(unique)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [child for child in folder.iterdir()
                if child.is_dir() and not child.name.startswith(".")]
    except OSError:
        return []


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """The parsed run.json; `RunDirError` naming the file when it is missing or not an object."""
    path = run_dir / RUN_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunDirError(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(info).__name__}")
    for section in ("params", "environment", "accounting"):
        if not isinstance(info.get(section, {}), dict):
            raise RunDirError(f"{path}: '{section}' is not an object")
    return info


def read_csv(path: Path, dtypes: dict[str, str],
             required: Sequence[str] = ()) -> pd.DataFrame:
    """The columns of ``dtypes`` that the CSV has; `RunDirError` naming the file when it is
    missing, unreadable or lacks a ``required`` column."""
    try:
        frame = pd.read_csv(path, usecols=lambda column: column in dtypes, dtype=dtypes,
                            keep_default_na=False, na_values=[""], engine="c")
    except FileNotFoundError as exc:
        raise RunDirError(f"{path}: missing") from exc
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: malformed ({str(exc).splitlines()[0]})") from exc
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise RunDirError(f"{path}: missing column(s) {', '.join(absent)}")
    return frame


def read_requests(run_dir: Path) -> pd.DataFrame:
    """requests.csv, the columns the metrics and the timeline need."""
    return read_csv(run_dir / "requests.csv", _dtypes(REQUEST_SCHEMA, REQUEST_READ),
                    REQUIRED_REQUEST_COLUMNS)


def read_batches(run_dir: Path) -> pd.DataFrame:
    """batches.csv, the columns the metrics and the timeline need."""
    return read_csv(run_dir / "batches.csv", _dtypes(BATCH_SCHEMA, BATCH_READ),
                    REQUIRED_BATCH_COLUMNS)


def read_monitor(run_dir: Path) -> pd.DataFrame | None:
    """monitor.csv (real runs only); None when the run has none."""
    path = run_dir / "monitor.csv"
    if not path.is_file():
        return None
    return read_csv(path, _dtypes(MONITOR_SCHEMA, MONITOR_READ), ("gpu_util_pct",))


def read_client(run_dir: Path, required: Sequence[str] = ("request_id",)) -> pd.DataFrame | None:
    """client.csv (the generator's side of a run), every column; None when the run has none.
    A client-side run needs the REQUIRED_CLIENT_COLUMNS its metrics are made of."""
    path = run_dir / "client.csv"
    return read_csv(path, CLIENT_SCHEMA, required) if path.is_file() else None


def read_schedule(run_dir: Path) -> pd.DataFrame | None:
    """schedule.csv (the arrival schedule); None when the run has none."""
    path = run_dir / "schedule.csv"
    if not path.is_file():
        return None
    return read_csv(path, _dtypes(SCHEDULE_SCHEMA, SCHEDULE_READ), ("scheduled_s",))
