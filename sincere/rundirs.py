"""Find and read run directories (SPEC section 2) robustly, for `process_results.py`.

A run directory is any folder holding a ``run.json``. Reading one never stops the others: a
missing or malformed file becomes a warning that names the file, and a run without a readable
``run.json`` or ``requests.csv`` is skipped with such a warning.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sincere.metrics import completed_latencies_s, run_metrics

RUN_FILE = "run.json"

# The columns each reader needs and the dtypes it reads them with (others are not read).
_TEXT = "str"
REQUEST_DTYPES = {"request_id": _TEXT, "model": _TEXT, "arrival_s": "float64",
                  "dispatch_s": "float64", "start_s": "float64", "end_s": "float64",
                  "queue_wait_s": "float64", "swap_wait_s": "float64", "processing_s": "float64",
                  "sla_met": _TEXT, "status": _TEXT, "output_tokens": "float64"}
REQUIRED_REQUEST_COLUMNS = ("model", "arrival_s", "end_s", "sla_met", "status")
BATCH_DTYPES = {"batch_id": _TEXT, "model": _TEXT, "batch_size": "float64", "reason": _TEXT,
                "dispatch_s": "float64", "swap_from": _TEXT, "swap_s": "float64",
                "start_s": "float64", "end_s": "float64", "processing_s": "float64"}
REQUIRED_BATCH_COLUMNS = ("model", "swap_s", "start_s", "end_s", "processing_s")
MONITOR_DTYPES = {"t_s": "float64", "gpu_util_pct": "float64"}
CLIENT_DTYPES = {"request_id": _TEXT}
SCHEDULE_DTYPES = {"request_id": _TEXT, "scheduled_s": "float64", "model": _TEXT}


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
        header = pd.read_csv(path, nrows=0).columns
        usecols = [c for c in header if c in dtypes]
        frame = pd.read_csv(path, usecols=usecols, dtype={c: dtypes[c] for c in usecols},
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
    return read_csv(run_dir / "requests.csv", REQUEST_DTYPES, REQUIRED_REQUEST_COLUMNS)


def read_batches(run_dir: Path) -> pd.DataFrame:
    """batches.csv, the columns the metrics and the timeline need."""
    return read_csv(run_dir / "batches.csv", BATCH_DTYPES, REQUIRED_BATCH_COLUMNS)


def read_monitor(run_dir: Path) -> pd.DataFrame | None:
    """monitor.csv (real runs only); None when the run has none."""
    path = run_dir / "monitor.csv"
    return read_csv(path, MONITOR_DTYPES, ("gpu_util_pct",)) if path.is_file() else None


def read_client(run_dir: Path) -> pd.DataFrame | None:
    """client.csv (the generator's side of a real run); None when the run has none."""
    path = run_dir / "client.csv"
    return read_csv(path, CLIENT_DTYPES, ("request_id",)) if path.is_file() else None


def read_schedule(run_dir: Path) -> pd.DataFrame | None:
    """schedule.csv (the arrival schedule); None when the run has none."""
    path = run_dir / "schedule.csv"
    return read_csv(path, SCHEDULE_DTYPES, ("scheduled_s",)) if path.is_file() else None


def run_cc_mode(info: dict[str, Any]) -> str:
    """``on``/``off``/``unknown``: a measured run's mode is what its environment detected (the
    profile it planned with says nothing about the VM); a simulated run's is its profiles'."""
    params, environment = info.get("params", {}), info.get("environment", {})
    candidates = [environment.get("cc_mode")]
    if params.get("engine") == "sim":
        profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
        candidates.insert(0, profiles.get("cc_mode"))
    for mode in candidates:
        if isinstance(mode, str) and mode.strip().lower() in {"on", "off"}:
            return mode.strip().lower()
    return "unknown"


@dataclass
class RunRecord:
    """One run summarised: its flat row for summary_runs.csv and its completed latencies."""

    path: Path
    row: dict[str, Any]
    latencies_s: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        """The run's id (unique within one results folder only)."""
        return str(self.row["run_id"])


def _run_time_s(info: dict[str, Any], requests: pd.DataFrame, batches: pd.DataFrame | None,
                run_dir: Path, warnings: list[str]) -> float:
    """run.json's run_time_s, or (with a warning) the last batch end or arrival when absent."""
    value = info.get("run_time_s")
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return float(value)
    ends = [requests["arrival_s"].max(), requests["end_s"].max()]
    if batches is not None:
        ends.append(batches["end_s"].max())
    events = [float(e) for e in ends if pd.notna(e)]
    if not events:
        warnings.append(f"{run_dir / RUN_FILE}: no run_time_s and no event to take it from; "
                        "per-second metrics left empty")
        return math.nan
    warnings.append(f"{run_dir / RUN_FILE}: no run_time_s; using the last event, "
                    f"{max(events):.1f} s")
    return max(events)


def run_platform(info: dict[str, Any]) -> str:
    """What ran: a measured run's GPU (``cpu`` without one); a simulated run's profile set
    without its ``_cc`` / ``_noncc`` suffix, so that the CC and non-CC sets of one device pair."""
    params, environment = info.get("params", {}), info.get("environment", {})
    if params.get("engine") == "sim":
        profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
        name = str(profiles.get("name") or profiles.get("device") or "unknown")
        return re.sub(r"_(non)?cc$", "", name)
    return str(environment.get("gpu_name") or "cpu")


def flat_params(info: dict[str, Any]) -> dict[str, Any]:
    """The run.json fields that identify a run, as one flat row."""
    params, environment = info.get("params", {}), info.get("environment", {})
    profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
    mix = params.get("model_mix")
    return {
        "run_id": info.get("run_id", ""),
        "status": info.get("status", "unknown"),
        "engine": str(params.get("engine") or "unknown"),
        "platform": run_platform(info),
        "cc_mode": run_cc_mode(info),
        "strategy": str(params.get("strategy") or "unknown"),
        "pattern": str(params.get("pattern") or "unknown"),
        "mean_rps": _as_float(params.get("mean_rps")),
        "sla_s": _as_float(params.get("sla_s")),
        "duration_s": _as_float(params.get("duration_s")),
        "max_new_tokens": _as_float(params.get("max_new_tokens")),
        "seed": params.get("seed"),
        "repeat": params.get("repeat"),
        "models": ";".join(map(str, params.get("models") or [])),
        "model_mix": ";".join(f"{k}={v}" for k, v in mix.items()) if isinstance(mix, dict) else "",
        "profiles_name": profiles.get("name"),
        "gpu_name": environment.get("gpu_name"),
    }


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _issued(info: dict[str, Any], run_dir: Path, received: int,
            warnings: list[str]) -> int:
    """How many requests the generator sent: run.json's accounting ``issued``, else the rows of
    client.csv, else the rows of requests.csv; never fewer than requests.csv holds."""
    accounting = info.get("accounting", {})
    issued = accounting.get("issued")
    source = f"{run_dir / RUN_FILE} accounting 'issued'"
    parts = [accounting.get(k) for k in ("completed", "rejected", "failed", "unserved")]
    if _is_count(issued) and all(map(_is_count, parts)) and sum(parts) != issued:
        warnings.append(f"{source}: {issued} != completed + rejected + failed + unserved "
                        f"= {sum(parts)}")
    if not _is_count(issued):
        try:
            client = read_client(run_dir)
        except RunDirError as exc:
            warnings.append(f"{exc}; requests issued taken from requests.csv")
            client = None
        issued, source = (len(client), str(run_dir / "client.csv")) if client is not None else (
            received, "")
    if issued < received:
        warnings.append(f"{source}: {issued} requests issued but requests.csv has {received} "
                        "rows; using requests.csv")
        issued = received
    return issued


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def summarise_run(run_dir: Path, results_root: Path | None = None) -> RunRecord:
    """Read one run directory and compute its metrics; `RunDirError` when it cannot be used."""
    warnings: list[str] = []
    info = read_run_json(run_dir)
    from sincere import client_runs  # it builds on this module's readers

    if client_runs.is_client_side(info):  # traffic to another server: client.csv only
        return client_runs.summarise_client_run(run_dir, info, results_root)
    requests = read_requests(run_dir)
    try:
        batches: pd.DataFrame | None = read_batches(run_dir)
    except RunDirError as exc:
        warnings.append(f"{exc}; batch metrics left empty")
        batches = None
    try:
        monitor = read_monitor(run_dir)
    except RunDirError as exc:
        warnings.append(f"{exc}; GPU utilisation left empty")
        monitor = None
    run_time_s = _run_time_s(info, requests, batches, run_dir, warnings)
    accounting = {f"accounting_{k}": v for k, v in info.get("accounting", {}).items()}
    received = accounting.get("accounting_received")
    if isinstance(received, int) and received != len(requests):
        warnings.append(f"{run_dir / 'requests.csv'}: {len(requests)} rows but run.json "
                        f"accounting says {received} received")
    issued = _issued(info, run_dir, len(requests), warnings)
    if info.get("status", "complete") != "complete":
        warnings.append(f"{run_dir / RUN_FILE}: run status is {info.get('status')!r}; "
                        "processed what it holds")
    row = {**flat_params(info),
           "results_dir": str(results_root) if results_root else str(run_dir.parent),
           "run_dir": str(run_dir), **accounting,
           **run_metrics(requests, batches, run_time_s, monitor, issued=issued)}
    return RunRecord(run_dir, row, completed_latencies_s(requests), warnings)


def _summarise_or_warn(job: tuple[Path, Path | None]) -> RunRecord | str:
    """`summarise_run` for a worker process: a failure comes back as its message."""
    try:
        return summarise_run(*job)
    except RunDirError as exc:
        return f"{exc}; run skipped"
    except Exception as exc:  # noqa: BLE001 - one bad run must not stop the others
        return f"{job[0]}: could not be processed ({type(exc).__name__}: {exc}); run skipped"


def summarise_runs(roots: Sequence[Path | str],
                   workers: int | None = None) -> tuple[list[RunRecord], list[str]]:
    """Every run under ``roots``, summarised (in parallel when there are many), and the
    warnings met on the way."""
    jobs: dict[Path, tuple[Path, Path]] = {}
    for root in roots:
        for run_dir in find_run_dirs([root]):
            jobs.setdefault(run_dir, (run_dir, Path(root).resolve()))
    warnings = [f"{root}: no run directories (no run.json found)" for root in roots
                if not any(r == Path(root).resolve() for _, r in jobs.values())]
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers > 1 and len(jobs) >= 8:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_summarise_or_warn, jobs.values(), chunksize=4))
    else:
        results = [_summarise_or_warn(job) for job in jobs.values()]
    records = [r for r in results if isinstance(r, RunRecord)]
    warnings += [r for r in results if isinstance(r, str)]
    for record in records:
        warnings.extend(record.warnings)
    return records, warnings
