"""Build synthetic run directories (SPEC section 2) with known answers, for tests.

`SyntheticRun` writes what the simulator and the real runner write: run.json, requests.csv,
batches.csv, schedule.csv and, when asked, monitor.csv and client.csv. Requests are added batch
by batch so that their timings agree with their batch's; the answers follow from the numbers a
test chooses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sincere.schemas import BATCH_COLUMNS, CLIENT_COLUMNS, MONITOR_COLUMNS, REQUEST_COLUMNS

MODELS = ("granite-7b", "gemma-7b", "llama3-8b")
MODEL_MIX = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}


@dataclass
class SyntheticRun:
    """One run directory's content, built up by `add_batch` / `add_completed` / `add_unrun`."""

    run_id: str = "bestbatch-timer__gamma__rate4__sla40__rep0"
    strategy: str = "BestBatch+Timer"
    pattern: str = "gamma"
    mean_rps: float = 4.0
    sla_s: float = 40.0
    duration_s: float = 100.0
    repeat: int = 0
    max_new_tokens: int = 50
    engine: str = "sim"
    cc_mode: str = "off"
    status: str = "complete"
    run_time_s: float | None = 100.0
    output_tokens: int = 50
    gpu_util_pct: list[float] | None = None  # monitor.csv samples, every 0.5 s from t_s = 0
    issued: int | None = None  # accounting 'issued' (None: one per request row)
    write_issued: bool = True  # False: no 'issued' in the accounting (as the server writes it)
    client_rows: int | None = None  # write a client.csv with this many rows
    profiles_name: str | None = None  # simulated runs (default h100-test_cc / h100-test_noncc)
    gpu_name: str = "NVIDIA H100"  # measured runs
    max_queue: int = 3000
    written: dict[str, float] = field(default_factory=dict)  # summary figures of the writer
    requests: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)

    def add_batch(self, model: str, arrivals_s: list[float], start_s: float, processing_s: float,
                  swap_s: float = 0.0, swap_from: str = "", reason: str = "full") -> None:
        """A batch of requests that arrived at ``arrivals_s``, dispatched at start_s - swap_s."""
        batch_id = len(self.batches)
        dispatch_s = start_s - swap_s
        end_s = start_s + processing_s
        self.batches.append({
            "batch_id": batch_id, "model": model, "batch_size": len(arrivals_s),
            "reason": reason, "dispatch_s": dispatch_s, "swap_from": swap_from,
            "swap_s": swap_s, "start_s": start_s, "end_s": end_s, "processing_s": processing_s,
            "output_tokens": self.output_tokens * len(arrivals_s), "retries": 0})
        for arrival_s in arrivals_s:
            self.requests.append({
                "request_id": len(self.requests), "model": model, "arrival_s": arrival_s,
                "dispatch_s": dispatch_s, "start_s": start_s, "end_s": end_s,
                "batch_id": batch_id, "batch_size": len(arrivals_s),
                "queue_wait_s": dispatch_s - arrival_s, "swap_wait_s": swap_s,
                "processing_s": processing_s, "latency_s": end_s - arrival_s,
                "sla_s": self.sla_s, "sla_met": end_s - arrival_s <= self.sla_s, "status": "ok",
                "prompt_tokens": 20, "output_tokens": self.output_tokens})

    def add_completed(self, latencies_s: list[float], model: str = "llama3-8b",
                      gap_s: float = 1000.0) -> None:
        """One single-request batch per latency, far apart, run as soon as it arrives."""
        first_s = len(self.requests) * gap_s
        for i, latency_s in enumerate(latencies_s):
            arrival_s = first_s + i * gap_s
            self.add_batch(model, [arrival_s], arrival_s, latency_s, reason="immediate")

    def add_unrun(self, status: str, count: int = 1, model: str = "llama3-8b",
                  arrival_s: float = 1.0) -> None:
        """Requests that never ran (rejected, failed or unserved): no timings, SLA missed."""
        for _ in range(count):
            self.requests.append({
                "request_id": len(self.requests), "model": model, "arrival_s": arrival_s,
                "sla_s": self.sla_s, "sla_met": False, "status": status, "prompt_tokens": 20})

    def run_json(self) -> dict[str, Any]:
        """run.json as the runner writes it (its summary left empty: process_results recomputes)."""
        statuses = pd.Series([r["status"] for r in self.requests], dtype=object)
        counts = statuses.value_counts().to_dict()
        info: dict[str, Any] = {
            "run_id": self.run_id, "status": self.status,
            "params": {
                "strategy": self.strategy, "pattern": self.pattern, "mean_rps": self.mean_rps,
                "sla_s": self.sla_s, "duration_s": self.duration_s, "seed": self.repeat,
                "repeat": self.repeat, "models": list(MODELS), "model_mix": MODEL_MIX,
                "max_new_tokens": self.max_new_tokens, "engine": self.engine,
                "profiles": {"name": self.profiles_name
                             or f"h100-test_{'cc' if self.cc_mode == 'on' else 'noncc'}",
                             "loading_file": "loading.csv", "batch_file": "batch.csv",
                             "device": "h100", "cc_mode": self.cc_mode},
                "pattern_params": {}, "strategy_params": {}, "max_queue": self.max_queue},
            "environment": {"cc_mode": self.cc_mode, "simulated": self.engine == "sim",
                            "gpu_name": None if self.engine == "sim" else self.gpu_name},
            "accounting": {"issued": self.issued if self.issued is not None
                           else len(self.requests), "received": len(self.requests),
                           "completed": counts.get("ok", 0),
                           "rejected": counts.get("rejected", 0),
                           "failed": counts.get("failed", 0),
                           "unserved": counts.get("unserved", 0)},
            "summary": dict(self.written),
        }
        if not self.write_issued:
            del info["accounting"]["issued"]
        if self.run_time_s is not None:
            info["run_time_s"] = self.run_time_s
        return info

    def write(self, root: Path) -> Path:
        """Write the run directory ``root/<run_id>/`` and return it."""
        run_dir = Path(root) / self.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(json.dumps(self.run_json(), indent=2))
        pd.DataFrame(self.requests, columns=REQUEST_COLUMNS).to_csv(
            run_dir / "requests.csv", index=False)
        pd.DataFrame(self.batches, columns=BATCH_COLUMNS).to_csv(
            run_dir / "batches.csv", index=False)
        pd.DataFrame({"request_id": [r["request_id"] for r in self.requests],
                      "scheduled_s": [r["arrival_s"] for r in self.requests],
                      "model": [r["model"] for r in self.requests],
                      "prompt_id": 0, "prompt_tokens": 20}).to_csv(
            run_dir / "schedule.csv", index=False)
        if self.gpu_util_pct is not None:
            samples = len(self.gpu_util_pct)
            monitor = pd.DataFrame(columns=MONITOR_COLUMNS, index=range(samples))
            monitor["t_s"] = np.arange(samples) * 0.5
            monitor["epoch_s"] = 1.7e9 + monitor["t_s"]
            monitor["gpu_util_pct"] = self.gpu_util_pct
            monitor.to_csv(run_dir / "monitor.csv", index=False)
        if self.client_rows is not None:
            client = pd.DataFrame(columns=CLIENT_COLUMNS, index=range(self.client_rows))
            client["request_id"] = [f"c{i}" for i in range(self.client_rows)]
            client.to_csv(run_dir / "client.csv", index=False)
        return run_dir



def grid_run(strategy: str, mean_rps: float, repeat: int, engine: str, cc_mode: str,
             slowdown: float = 1.0, profiles_name: str | None = None) -> SyntheticRun:
    """A small plausible run for end-to-end tests: 20 s of arrivals at ``mean_rps``, batches of
    four alternating between two models with a swap at each change, one request unserved;
    ``slowdown`` stretches every swap and batch (a slower environment)."""
    run = SyntheticRun(run_id=f"{strategy.lower()}__gamma__rate{mean_rps:g}__sla40__rep{repeat}",
                       strategy=strategy, mean_rps=mean_rps, repeat=repeat, engine=engine,
                       cc_mode=cc_mode, duration_s=20.0, profiles_name=profiles_name)
    arrivals_s = np.arange(int(20 * mean_rps)) / mean_rps + 0.05 * repeat
    free_s, resident = 0.0, ""
    served_s = arrivals_s[:-1]  # the last arrival is left unserved
    for first in range(0, served_s.size, 4):
        batch = [float(a) for a in served_s[first:first + 4]]
        model = MODELS[(first // 4) % 2]
        swap_s = (0.5 + 0.1 * repeat) * slowdown if model != resident else 0.0
        start_s = max(free_s, batch[-1]) + swap_s
        run.add_batch(model, batch, start_s, processing_s=0.8 * slowdown, swap_s=swap_s,
                      swap_from=resident if swap_s else "")
        free_s, resident = start_s + 0.8 * slowdown, model
    run.add_unrun("unserved", arrival_s=float(arrivals_s[-1]))
    run.run_time_s = max(free_s, 20.0)
    if engine == "hf":
        run.gpu_util_pct = [60.0 + 5 * repeat] * int(run.run_time_s / 0.5)
    return run
