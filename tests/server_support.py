"""Helpers for the experiment-server tests: a profile measured here, and in-process runs.

A run goes through the real pieces: the Flask app and threaded HTTP server, the scheduler
thread, the engine on the tiny models, the generator's open-loop sender. Only the processes
differ from run_experiments.py (one process, so torch is imported once).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sincere.assets.workloads import read_workloads
from sincere.engine.engine import Engine
from sincere.files import CsvWriter
from sincere.profiles.files import profile_path
from sincere.profiles.profile_set import ProfileSet, load_profiles
from sincere.profiles.profiling import (
    BATCH_COLUMNS,
    LOADING_COLUMNS,
    loading_row,
    measure_batch,
    sweep_model,
    time_loading,
)
from sincere.scheduling.strategies import Strategy, make_strategy
from sincere.scheduling.view import SchedulerView, largest_batch
from sincere.serving.app import create_app
from sincere.serving.http_server import serving
from sincere.serving.inputs import Limits
from sincere.serving.server import ExperimentServer
from sincere.traffic.api_modes import ApiMode
from sincere.traffic.client import send_schedule
from sincere.traffic.schedule import Schedule, build_schedule

MODELS = ("granite-7b", "gemma-7b", "llama3-8b")


@dataclass(frozen=True)
class HoldToLargest(Strategy):
    """Waits for the largest profiled batch (8 here), whatever the measured best batch is:
    in a test of a few requests, nothing leaves before the drain."""

    def target_size(self, view: SchedulerView, model: str) -> int:
        return largest_batch(view, model)
MIX = {"granite-7b": 0.2, "gemma-7b": 0.3, "llama3-8b": 0.5}
SIZES = (1, 2, 4, 8)


def one_cpu_thread() -> None:
    """One torch thread: the server tests run HTTP, generator and scheduler threads in the
    same process on two cores, and a second OpenMP thread that has to wait for a core makes
    batch times erratic (seen here: 0.06 s batches taking 0.3 to 2 s)."""
    import torch

    torch.set_num_threads(1)


def measure_profile(models_dir: Path, prompts: list[str], out_dir: Path,
                    max_new_tokens: int) -> ProfileSet:
    """Profile the tiny models on this machine, in-process, as run_profiling.sh would (fewer
    sizes and rounds), and read the result back as the scheduler does."""
    disk = Engine(models_dir, host_cache=False)
    cache = Engine(models_dir, host_cache=True)
    stamp = "20000101-000000"
    source = "measured: tests"
    with CsvWriter(profile_path(out_dir, "model_loading_times", "cpu", "off", stamp),
                   LOADING_COLUMNS) as writer:
        for alias in MODELS:
            timings = time_loading(disk, cache, alias, 2, log=lambda _line: None)
            writer.write(loading_row(timings, dtype="float32", device="cpu", cc_mode="off",
                                     server_path="host_cache", source=source))
    with CsvWriter(profile_path(out_dir, "batch_profiling", "cpu", "off", stamp),
                   BATCH_COLUMNS) as writer:
        for alias in MODELS:
            cache.load(alias)

            def profile(model: str, size: int, run: int) -> dict[str, Any]:
                start = (run * size) % max(1, len(prompts) - size)
                return measure_batch(cache, prompts[start:start + size], max_new_tokens)

            sweep_model(profile, alias, SIZES, 2, max_new_tokens, source, writer.write,
                        log=lambda _line: None)
            cache.unload()
    return load_profiles("cpu_noncc", out_dir)


@dataclass
class RunOutput:
    run_dir: Path
    run: dict[str, Any]
    client: list[dict[str, Any]]
    requests: pd.DataFrame
    batches: pd.DataFrame
    server: ExperimentServer


def run_in_process(engine: Engine, profiles: ProfileSet, workloads_dir: Path, run_dir: Path,
                   strategy: str | Strategy, schedule: Schedule, sla_s: float,
                   max_new_tokens: int,
                   drain_timeout_s: float = 60.0, models: tuple[str, ...] = MODELS,
                   during: Any = None, api: ApiMode | None = None,
                   **server_options: Any) -> RunOutput:
    """One run through the HTTP server; ``during(server, url)`` runs while traffic flows."""
    prompts = read_workloads(workloads_dir)
    chosen = strategy if isinstance(strategy, Strategy) else make_strategy(strategy)
    server = ExperimentServer(engine, profiles, chosen, sla_s, max_new_tokens,
                              run_dir, list(models), drain_timeout_s=drain_timeout_s,
                              **server_options).start()
    app = create_app(server, Limits())
    try:
        with serving(app) as url:
            if during is not None:
                import threading

                threading.Thread(target=during, args=(server, url), daemon=True).start()
            result = send_schedule(url, schedule, prompts, client_csv=run_dir / "client.csv",
                                   timeout_s=120.0, start_params={"pattern": "test"}, api=api)
            schedule.write_csv(run_dir / "schedule.csv")
    finally:
        server.abort("interrupted")  # no-op once the run has finished
        server.wait_finished(60.0)
        server.close()
        engine.unload()
    return RunOutput(run_dir, json.loads((run_dir / "run.json").read_text()), result.rows,
                     pd.read_csv(run_dir / "requests.csv", keep_default_na=False,
                                 na_values=[""]),
                     pd.read_csv(run_dir / "batches.csv", keep_default_na=False,
                                 na_values=[""]), server)


@contextlib.contextmanager
def live_server(engine: Engine, profiles: ProfileSet, strategy: Strategy, new_tokens: int,
                run_dir: Path, limits: Limits | None = None, sla_s: float = 30.0,
                models: tuple[str, ...] | list[str] = MODELS, api_key: str = "",
                tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, Any]]:
    """(url, server) of a server on the tiny models over HTTP (HTTPS with ``tls``; asking for
    ``api_key`` when given); ended and closed afterwards."""
    server = ExperimentServer(engine, profiles, strategy, sla_s, new_tokens, run_dir,
                              list(models), drain_timeout_s=30.0).start()
    try:
        with serving(create_app(server, limits or Limits(), api_key=api_key), tls=tls) as url:
            yield url, server
    finally:
        server.abort()
        server.wait_finished(30)
        server.close()
        engine.unload()


def runner_argv(results: Path, tiny_models: Path, workloads: Path, tiny_profile,
                strategies: list[str], duration_s: float = 4.0) -> list[str]:
    """run_experiments.py on the tiny models: each strategy at a constant 3 requests/s, SLA
    5 s, for ``duration_s`` (tests/conftest.py's finished_grid is its first run)."""
    from sincere.grid.children import script_argv

    return script_argv("run_experiments.py", {
        "RESULTS_DIR": results, "MODELS_DIR": tiny_models, "WORKLOADS_DIR": workloads,
        "PROFILES": "cpu_noncc", "PROFILES_DIR": Path(tiny_profile.loading_file).parent,
        "STRATEGIES": strategies, "PATTERNS": ["constant"], "MEANS": [3.0], "SLAS": [5.0],
        "DURATION_S": duration_s, "DRAIN_TIMEOUT_S": 20.0, "MAX_NEW_TOKENS": 4,
        "MONITOR_PERIOD_S": 0.2})


def schedule_for(workloads_dir: Path, mean_rps: float, duration_s: float, seed: int = 0,
                 pattern: str = "gamma", mix: dict[str, float] | None = None) -> Schedule:
    prompts = read_workloads(workloads_dir)
    return build_schedule(pattern, mean_rps, duration_s, seed, mix or MIX,
                          prompt_ids=sorted(prompts))
