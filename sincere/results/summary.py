"""One run directory summarised as a row of summary_runs.csv (SPEC section 6), and many at once.

Reading one run never stops the others: a missing or malformed file becomes a warning that names
the file, and a run without a readable ``run.json`` or ``requests.csv`` is skipped with such a
warning.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sincere.runs.accounting import issued_count
from sincere.runs.client_side import PLATFORM as CLIENT_PLATFORM
from sincere.runs.client_side import client_metrics, client_window_s, is_client_side
from sincere.runs.client_side import completed_latencies_s as client_latencies_s
from sincere.runs.identity import ENGINE_KEYS, PROFILE_KEYS, REPEAT_KEYS, params_hash, run_identity
from sincere.runs.metrics import WRITTEN_KEYS, completed_latencies_s, run_metrics
from sincere.runs.rundirs import (
    REQUIRED_CLIENT_COLUMNS,
    RUN_FILE,
    RunDirError,
    find_run_dirs,
    read_batches,
    read_client,
    read_monitor,
    read_requests,
    read_run_json,
)
from sincere.runs.window import finite_duration_s, traffic_window_s


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


def _traffic_window_s(info: dict[str, Any], requests: pd.DataFrame, run_dir: Path,
                      warnings: list[str]) -> float:
    """The traffic window the rates are over: run.json's ``traffic_window_s``, else (an older
    run.json) the one definition (``sincere.runs.window``): the run's duration, or its last
    arrival, with a warning."""
    written = info.get("traffic_window_s")
    if finite_duration_s(written) is not None:
        return float(written)
    duration_s = info.get("params", {}).get("duration_s")
    arrivals = requests["arrival_s"]
    window_s = traffic_window_s(duration_s, float(arrivals.max()) if arrivals.notna().any()
                                else None)
    if finite_duration_s(duration_s) is None:
        warnings.append(f"{run_dir / RUN_FILE}: no traffic window and no duration; "
                        + (f"using the last arrival, {window_s:.1f} s"
                           if math.isfinite(window_s) else "per-second metrics left empty"))
    return window_s


def run_platform(info: dict[str, Any]) -> str:
    """What ran: a measured run's GPU (``cpu`` without one); a simulated run's profile set
    without its ``_cc`` / ``_noncc`` suffix, so that the CC and non-CC sets of one device pair."""
    params, environment = info.get("params", {}), info.get("environment", {})
    if params.get("engine") == "sim":
        profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
        name = str(profiles.get("name") or profiles.get("device") or "unknown")
        return re.sub(r"_(non)?cc$", "", name)
    return str(environment.get("gpu_name") or "cpu")


def identity_columns(info: dict[str, Any]) -> dict[str, str]:
    """The run's identity hash, and the hashes of what runs that may be grouped share: a grid
    cell (all but the seed), a CC pair (also the profile, which differs between the modes), a
    simulated-versus-measured pair (also the engine side; the profile must be the same)."""
    identity = info.get("identity")
    if not isinstance(identity, dict):
        identity = run_identity(info.get("params", {}))
    return {"params_hash": params_hash(identity),
            "cell_id": params_hash(identity, REPEAT_KEYS),
            "cc_pair_id": params_hash(identity, REPEAT_KEYS + PROFILE_KEYS),
            "sim_pair_id": params_hash(identity, REPEAT_KEYS + ENGINE_KEYS)}


def flat_params(info: dict[str, Any]) -> dict[str, Any]:
    """The run.json fields that identify a run, as one flat row."""
    params, environment = info.get("params", {}), info.get("environment", {})
    profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
    mix = params.get("model_mix")
    return {
        **identity_columns(info),
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
        "failure": info.get("failure") or "",
    }


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _issued(info: dict[str, Any], run_dir: Path, received: int,
            warnings: list[str]) -> int:
    """How many requests the generator sent (``sincere.runs.accounting.issued_count``), with
    client.csv's rows when run.json does not say."""
    accounting = info.get("accounting", {})
    client_rows = None
    if not _is_count(accounting.get("issued")):
        try:
            client = read_client(run_dir)
        except RunDirError as exc:
            warnings.append(f"{exc}; requests issued taken from requests.csv")
            client = None
        client_rows = len(client) if client is not None else None
    return issued_count(accounting, client_rows, received, warnings, str(run_dir / RUN_FILE))


def _written(info: dict[str, Any]) -> dict[str, float | None]:
    """The summary figures only the run's writer could compute (the bound, the fit to the
    profile, the server's own time), from run.json."""
    summary = info.get("summary") if isinstance(info.get("summary"), dict) else {}
    return {key: float(value) if isinstance(value, (int, float))
            and not isinstance(value, bool) else None
            for key in WRITTEN_KEYS for value in [summary.get(key)]}


def replay_columns(info: dict[str, Any]) -> dict[str, float | int | None]:
    """A simulated run's spread over its replays (run.json ``replays``:
    sincere.simulation.simulator) as ``replays`` and ``replays_<metric>_<mean|low|high>``; nothing
    for a run without one."""
    block = info.get("replays")
    if not isinstance(block, dict) or not isinstance(block.get("metrics"), dict):
        return {}
    columns: dict[str, float | int | None] = {"replays": block.get("runs")}
    for metric, figures in block["metrics"].items():
        for part in ("mean", "low", "high"):
            value = figures.get(part) if isinstance(figures, dict) else None
            columns[f"replays_{metric}_{part}"] = float(value) if isinstance(
                value, (int, float)) and not isinstance(value, bool) else None
    return columns


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def summarise_run(run_dir: Path, results_root: Path | None = None) -> RunRecord:
    """Read one run directory and compute its metrics; `RunDirError` when it cannot be used."""
    warnings: list[str] = []
    info = read_run_json(run_dir)
    if is_client_side(info):  # traffic to another server: client.csv only
        return summarise_client_run(run_dir, info, results_root)
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
    window_s = _traffic_window_s(info, requests, run_dir, warnings)
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
           **run_metrics(requests, batches, window_s, monitor, issued=issued,
                         written=_written(info)),
           **replay_columns(info)}
    return RunRecord(run_dir, row, completed_latencies_s(requests), warnings)


def summarise_client_run(run_dir: Path, info: dict[str, Any],
                         results_root: Path | None = None) -> RunRecord:
    """A client-side run (``sincere.runs.client_side``) summarised like ``summarise_run``."""
    warnings: list[str] = []
    client = read_client(run_dir, REQUIRED_CLIENT_COLUMNS)
    if client is None:
        raise RunDirError(f"{run_dir / 'client.csv'}: missing")
    params = info.get("params", {})
    window_s = client_window_s(client, info.get("traffic_window_s") or params.get("duration_s"))
    issued = info.get("accounting", {}).get("issued")
    if not _is_count(issued):
        issued = len(client)
    if info.get("status", "complete") != "complete":
        warnings.append(f"{run_dir / RUN_FILE}: run status is {info.get('status')!r}; "
                        "processed what it holds")
    accounting = {f"accounting_{k}": v for k, v in info.get("accounting", {}).items()}
    sla_s = params.get("sla_s")
    row = {**flat_params(info), "platform": CLIENT_PLATFORM,  # the server's GPU is unseen
           "results_dir": str(results_root) if results_root else str(run_dir.parent),
           "run_dir": str(run_dir), **accounting,
           **client_metrics(client, float(sla_s) if isinstance(sla_s, (int, float)) else None,
                            window_s, issued)}
    return RunRecord(run_dir, row, client_latencies_s(client), warnings)


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
