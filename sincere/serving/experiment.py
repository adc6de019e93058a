"""Wiring of the experiment server process from the script's constants: models, run directory,
the server with its monitor.

Kept apart from the script (api_scheduler_experiments.py) so that tests and benchmarks build the
very same server in-process. Which profile set it plans with is ``sincere.profiles.selection``'s;
serving the app over HTTP, ``sincere.serving.http_server``'s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sincere.host.monitor import Monitor, visible_gpu
from sincere.profiles.profile_set import ProfileSet
from sincere.profiles.selection import profile_mismatches
from sincere.scheduling.strategies import make_strategy, strategy_slug
from sincere.scheduling.strategies import options_from_constants as strategy_options
from sincere.serving.server import ExperimentServer


def resolve_models(wanted: list[str], engine: Any, profiles: ProfileSet) -> list[str]:
    """The models to serve: ``wanted``, or every model folder that has a profile."""
    available = engine.available_models()
    if wanted:
        missing = [m for m in wanted if m not in available]
        if missing:
            raise ValueError(f"no model folder for {', '.join(missing)} in {engine.models_dir} "
                             f"(have: {', '.join(available) or 'none'}); run download_models.py")
        unprofiled = [m for m in wanted if m not in profiles.models]
        if unprofiled:
            raise ValueError(f"no profile for {', '.join(unprofiled)} in "
                             f"{Path(profiles.loading_file).name}")
        return list(wanted)
    models = [m for m in available if m in profiles.models]
    if not models:
        raise ValueError(f"none of the model folders in {engine.models_dir} "
                         f"({', '.join(available) or 'none'}) has a profile in "
                         f"{Path(profiles.loading_file).name}")
    return models


def run_directory(run_dir: str, results_dir: str, run_id: str, strategy: str,
                  sla_s: float) -> Path:
    """RUN_DIR, else RESULTS_DIR/RUN_ID, else RESULTS_DIR/<strategy>__sla<SLA>__<date-time>."""
    if run_dir:
        return Path(run_dir)
    name = run_id or f"{strategy_slug(strategy)}__sla{sla_s:g}__{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(results_dir) / name


def build_server(cfg: Any, engine: Any, profiles: ProfileSet, models: list[str],
                 run_dir: Path, environment: dict[str, Any],
                 api_key_required: bool = False) -> ExperimentServer:
    """The run's ExperimentServer from a script's constants (api_scheduler_experiments.py);
    run.json records whether it served HTTPS and asked for a key (never the key)."""
    strategy = make_strategy(cfg.MODE, **strategy_options(vars(cfg)))
    params = {"profiles": profiles.describe(cfg.PROFILES),
              "profile_mismatch": profile_mismatches(profiles, environment, cfg.HOST_CACHE,
                                                     models),
              "allow_profile_mismatch": bool(cfg.ALLOW_PROFILE_MISMATCH),
              "host_cache": bool(cfg.HOST_CACHE), "device": engine.device.type,
              "engine_process": bool(cfg.ENGINE_PROCESS), "pin_cores": bool(cfg.PIN_CORES),
              "decode": engine.decode,
              "dtype": str(engine.dtype).removeprefix("torch."),
              "max_prompt_chars": cfg.MAX_PROMPT_CHARS,
              "tls": bool(cfg.TLS_CERT), "api_key_required": api_key_required}
    period_s = cfg.MONITOR_PERIOD_S
    return ExperimentServer(
        engine, profiles, strategy, cfg.SLA, cfg.MAX_NEW_TOKENS, run_dir, models,
        drain_timeout_s=cfg.DRAIN_TIMEOUT_S, max_queue=cfg.MAX_QUEUE,
        rate_window_s=cfg.RATE_WINDOW_S, params=params, environment=environment,
        monitor_factory=lambda start: Monitor(run_dir / "monitor.csv", period_s=period_s,
                                              gpu_index=visible_gpu(), start_monotonic=start))
