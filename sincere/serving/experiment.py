"""Wiring of the experiment server process: profiles, models, run directory, HTTP server.

Kept apart from the script so that tests and benchmarks build the very same server in-process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from sincere.host.monitor import Monitor, visible_gpu
from sincere.profiles.files import cc_label, device_name
from sincere.profiles.profile_set import ProfileError, ProfileSet, load_profiles
from sincere.scheduling.strategies import make_strategy, strategy_slug
from sincere.scheduling.strategies import options_from_constants as strategy_options
from sincere.serving.server import ExperimentServer

LISTEN_BACKLOG = 4096  # connections the kernel holds while the accept loop catches up


def auto_profile_name(environment: dict[str, Any], device_type: str,
                      decode: str = "eager") -> str:
    """``<device>[-static]_<cc|noncc>`` of this machine and engine: the set run_profiling.sh
    writes here."""
    return (f"{device_name(environment, device_type, decode)}_"
            f"{cc_label(environment.get('cc_mode', ''))}")


def resolve_profiles(name: str, profiles_dir: Path, environment: dict[str, Any],
                     device_type: str, std_factor: float, decode: str = "eager") -> ProfileSet:
    """The profile set ``name``, or with ``auto`` the one measured on this device and CC mode;
    ValueError with what to do when there is none."""
    wanted = auto_profile_name(environment, device_type, decode) if name == "auto" else name
    try:
        return load_profiles(wanted, profiles_dir, std_factor=std_factor)
    except ProfileError as exc:
        hint = " (run run_profiling.sh on this machine first)" if name == "auto" else ""
        raise ValueError(f"profile set {wanted!r}: {exc}{hint}") from None


def profile_mismatches(profiles: ProfileSet, environment: dict[str, Any], host_cache: bool,
                       models: list[str]) -> list[str]:
    """Where the profile contradicts this server, each with its fix: a CC mode other than the
    one detected here, or load times of another load path than the one swaps will take
    (host RAM with HOST_CACHE, the disk without). Every timer would be planned on wrong times."""
    name = Path(profiles.loading_file).name
    problems = []
    detected, profiled = environment.get("cc_mode"), profiles.cc_mode
    if {detected, profiled} <= {"on", "off"} and detected != profiled:
        problems.append(
            f"the profile {name} was measured with CC {profiled} but this GPU has CC {detected}: "
            f"profile this machine (run_profiling.sh) or name a {cc_label(detected)} profile set")
    for model in models:
        path = profiles[model].load_path
        if not path:
            continue
        cached = path.startswith("host_cache")
        if cached != host_cache:
            problems.append(
                f"{model}: the profile {name} times loads by {path} but HOST_CACHE is "
                f"{'on' if host_cache else 'off'}, so swaps will load "
                f"{'from host RAM' if host_cache else 'from disk'}: set HOST_CACHE to "
                f"{'true' if cached else 'false'} or profile with that load path")
    return problems


def grid_profiles(name: str, profiles_dir: Path, device: str, decode: str,
                  std_factor: float) -> ProfileSet:
    """The profile set the servers of a grid run on this machine will plan with (for the runs'
    identity before they run); ValueError when there is none."""
    import torch

    from sincere.host.environment import environment_block

    device_type = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type
    environment = environment_block() if name == "auto" else {}
    return resolve_profiles(name, profiles_dir, environment, device_type, std_factor, decode)


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
                 run_dir: Path, environment: dict[str, Any]) -> ExperimentServer:
    """The run's ExperimentServer from a script's constants (api_scheduler_experiments.py)."""
    strategy = make_strategy(cfg.MODE, **strategy_options(vars(cfg)))
    params = {"profiles": profiles.describe(cfg.PROFILES),
              "profile_mismatch": profile_mismatches(profiles, environment, cfg.HOST_CACHE,
                                                     models),
              "allow_profile_mismatch": bool(cfg.ALLOW_PROFILE_MISMATCH),
              "host_cache": bool(cfg.HOST_CACHE), "device": engine.device.type,
              "engine_process": bool(cfg.ENGINE_PROCESS), "pin_cores": bool(cfg.PIN_CORES),
              "decode": engine.decode,
              "dtype": str(engine.dtype).removeprefix("torch."),
              "max_prompt_chars": cfg.MAX_PROMPT_CHARS}
    period_s = cfg.MONITOR_PERIOD_S
    return ExperimentServer(
        engine, profiles, strategy, cfg.SLA, cfg.MAX_NEW_TOKENS, run_dir, models,
        drain_timeout_s=cfg.DRAIN_TIMEOUT_S, max_queue=cfg.MAX_QUEUE,
        rate_window_s=cfg.RATE_WINDOW_S, params=params, environment=environment,
        monitor_factory=lambda start: Monitor(run_dir / "monitor.csv", period_s=period_s,
                                              gpu_index=visible_gpu(), start_monotonic=start))


class _HttpServer(ThreadedWSGIServer):
    request_queue_size = LISTEN_BACKLOG


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request (thousands a run); errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def make_http_server(host: str, port: int, app: Any) -> ThreadedWSGIServer:
    """A threaded WSGI server (a thread per connection) with a deep listen backlog."""
    return _HttpServer(host, port, app, handler=_QuietHandler)


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread of this process (tests, benchmarks); yields its URL."""
    httpd = make_http_server(host, port, app)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name="http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10.0)


def main(argv: list[str] | None = None) -> int:
    """``python -m sincere.serving.experiment --profile-name``: this machine's profile set name."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile-name", action="store_true", required=True,
                        help="print <device>_<cc|noncc> of this machine (what PROFILES=auto uses)")
    parser.add_argument("--device", default="", help="torch device (default: cuda if present)")
    parser.add_argument("--decode", default="eager", help="batch engine: eager or static")
    args = parser.parse_args(argv)
    import torch

    from sincere.host.environment import environment_block

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(auto_profile_name(environment_block(), torch.device(device).type, args.decode))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
