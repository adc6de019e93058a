"""Client-side runs: traffic sent to a server that is not SINCERE's, kept and summarised from
client.csv alone.

Such a server (vLLM, SGLang, TGI, ...) has no ``/start``, ``/stop`` or requests.csv, so the run
directory holds what the generator saw: ``client.csv``, ``schedule.csv`` and a run.json written
here, marked ``"side": "client"`` with engine ``external``. Its metrics are the subset of SPEC
section 6 that a client can measure: latency is the client's (request sent to answer received,
network included), a request answered 200 is completed, a 4xx rejected, a 5xx failed, one never
answered (timeout, connection error) lost; queue, swap and batch metrics are empty. The report
labels these runs client-side.

The CC mode of the server's machine is detected only when the server is on this machine (the
GPU's NVML fields); otherwise it is what the user says it is (``CC_MODE``), and run.json says
which.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from sincere.runs.accounting import client_books, http_statuses
from sincere.runs.identity import with_identity
from sincere.runs.metrics import METRIC_KEYS, completed, latency_summary
from sincere.runs.window import traffic_window_s

CLIENT_SIDE = "client"
ENGINE = "external"  # run.json params.engine of a client-side run
PLATFORM = "external server"  # what ran, in the report's tables (its GPU is not known here)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def server_params(url: str, api: str, served_models: dict[str, str], aliases: Any,
                  ignore_eos: bool) -> dict[str, Any]:
    """Which server a client-side run measured and how it was asked: its run.json
    ``strategy_params`` (the server's scheduling is the run's strategy), and so part of the run's
    identity: a grid against another server never reuses these runs."""
    return {"server_url": url.rstrip("/"), "api": api, "ignore_eos": bool(ignore_eos),
            "served_models": {a: served_models.get(a, a) for a in sorted(aliases)}}


def is_client_side(info: dict[str, Any]) -> bool:
    """True for the run.json of a client-side run."""
    params = info.get("params") if isinstance(info.get("params"), dict) else {}
    return info.get("side") == CLIENT_SIDE or params.get("engine") == ENGINE


def cc_mode_of(server_url: str, user_cc_mode: str,
               detect: Any = None) -> tuple[str, str]:
    """(cc_mode, how it was known) of the server's machine: detected when the server is on this
    machine and its GPU says (``detect()`` gives the environment block), else the user's
    ``CC_MODE`` (on or off), else unknown."""
    user = user_cc_mode.strip().lower()
    if user not in ("", "on", "off"):
        raise ValueError(f"CC_MODE must be on, off or empty, got {user_cc_mode!r}")
    detected = "unknown"
    if urlparse(server_url).hostname in LOOPBACK:
        if detect is None:
            from sincere.host.environment import environment_block as detect
        detected = str(detect().get("cc_mode", "unknown"))
    if detected in ("on", "off"):
        return detected, "detected on this machine (the server is local)"
    if user:
        return user, "given by the user (CC_MODE)"
    return "unknown", "not detected and not given (set CC_MODE)"


def completed_latencies_s(client: pd.DataFrame) -> np.ndarray:
    """Client latencies (sent to received) of the requests answered 200."""
    latency_s = pd.to_numeric(client["client_latency_s"], errors="coerce").to_numpy(float)
    return completed(latency_s, http_statuses(client) == 200)


def client_window_s(client: pd.DataFrame, duration_s: Any) -> float:
    """The traffic window (``sincere.runs.window``): the run's duration, else the last
    request's scheduled send, the client's arrival."""
    scheduled = pd.to_numeric(client.get("scheduled_s", pd.Series(dtype=float)),
                              errors="coerce")
    return traffic_window_s(duration_s, float(scheduled.max()) if scheduled.notna().any()
                            else None)


def client_metrics(client: pd.DataFrame, sla_s: float | None, window_s: float,
                   issued: int | None = None) -> dict[str, float | int | None]:
    """The run's metrics (the keys of ``metrics.METRIC_KEYS``) from client.csv, as SPEC section
    6 defines them with the client's latency: rates over the traffic window ``window_s``,
    counting what was answered in it; those a client cannot see (queue and swap waits, batches,
    GPU) are None."""
    issued = max(len(client), int(issued)) if issued is not None else len(client)
    status = http_statuses(client)
    books = client_books(status, issued)
    ok = status == 200
    latency_s = pd.to_numeric(client["client_latency_s"], errors="coerce").to_numpy(float)
    received_s = pd.to_numeric(client["received_s"], errors="coerce").to_numpy(float)
    in_window = ok & (received_s <= window_s)
    sla_known = sla_s is not None and math.isfinite(sla_s)
    met = ok & (latency_s <= sla_s) if sla_known else np.zeros(len(client), dtype=bool)
    tokens = pd.to_numeric(client.get("output_tokens", pd.Series(np.nan, index=client.index)),
                           errors="coerce").to_numpy(float)

    def per_s(count: float) -> float | None:
        return float(count) / window_s if window_s > 0 else None  # NaN window: None

    last_answer_s = float(np.nanmax(received_s[ok])) if ok.any() else math.nan
    ends = [e for e in (last_answer_s, window_s) if math.isfinite(e)]
    values: dict[str, float | int | None] = dict.fromkeys(METRIC_KEYS)
    values.update({
        "requests_issued": issued, "requests_received": books["answered"],
        "requests_lost": books["lost"], "requests_ok": books["completed"],
        "requests_rejected": books["rejected"], "requests_failed": books["failed"],
        "sla_met_requests": int(met.sum()) if sla_known else None,
        "sla_attainment": int(met.sum()) / issued if sla_known and issued else None,
        "throughput_rps": per_s(int(in_window.sum())),
        "output_tokens_per_s": per_s(float(np.nansum(tokens[in_window]))),
        "goodput_rps": per_s(int((met & in_window).sum())) if sla_known else None,
        "traffic_window_s": window_s if math.isfinite(window_s) else None,
        "drain_s": max(0.0, last_answer_s - window_s) if math.isfinite(last_answer_s)
        and math.isfinite(window_s) else None,
        "completed_in_drain": int((ok & (received_s > window_s)).sum()),
        "run_time_s": max(ends) if ends else None})
    values.update(latency_summary(completed_latencies_s(client)))
    return values


def client_run_json(run_id: str, params: dict[str, Any], environment: dict[str, Any],
                    client: pd.DataFrame, issued: int, started_epoch_s: float,
                    status: str = "complete") -> dict[str, Any]:
    """The run.json of a client-side run: params (engine ``external``) with their identity,
    the server's environment as far as known, the client's accounting and the metrics."""
    params = {**params, "engine": ENGINE}
    window_s = client_window_s(client, params.get("duration_s"))
    summary = client_metrics(client, params.get("sla_s"), window_s, issued)
    return with_identity({
        "run_id": run_id, "status": status, "side": CLIENT_SIDE, "params": params,
        "environment": environment,
        "accounting": client_books(http_statuses(client), issued),
        "started_epoch_s": started_epoch_s, "traffic_window_s": summary["traffic_window_s"],
        "run_time_s": summary["run_time_s"], "summary": summary})
