"""Run one grid point for real: server and generator as subprocesses, then check and keep the run.

Each run is staged in ``RESULTS_DIR/.partial/<run_id>`` and moved to ``RESULTS_DIR/<run_id>``
once it has ended, complete or failed, so a folder under RESULTS_DIR is always a finished
attempt and an interrupted one never looks finished. Children run in their own process groups
and are always stopped (SIGTERM, then SIGKILL) before ``run_point`` returns or raises.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sincere.access import API_KEY_ENV, client_verify
from sincere.files import write_json_atomic
from sincere.grid.children import (
    ROOT,
    Child,
    last_error,
    script_argv,
    server_side_cores,
    start_server,
    wait_for_children,
)
from sincere.grid.points import GridPoint
from sincere.runs.accounting import check_server_run
from sincere.runs.identity import differences, params_hash, run_identity, with_identity
from sincere.runs.params import run_params, traffic_params
from sincere.runs.rundirs import RunDirError, read_run_json
from sincere.scheduling.strategies import make_strategy
from sincere.scheduling.strategies import options_from_constants as strategy_options
from sincere.traffic.api_modes import ServerUnavailable
from sincere.traffic.patterns import pattern_options

PARTIAL_DIR = ".partial"
PROFILE_KINDS = ("model_loading_times", "batch_profiling")  # the two files of a profile set


@dataclass
class RunSpec:
    """What one real run needs besides its grid point."""

    results_dir: Path
    server_options: dict[str, Any]  # api_scheduler_experiments.py constants
    generator_options: dict[str, Any]  # api_calls.py constants
    duration_s: float
    drain_timeout_s: float
    base_seed: int
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port for each run
    start_timeout_s: float = 600.0
    run_timeout_s: float = 0.0  # 0: duration + drain timeout + 300 s
    extra_params: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)  # ProfileSet.describe() of the server's
    # The server's API key, which the generator sends too: it goes to the children in their
    # environment (to a Ray node inside the task), never on a command line or into a file.
    api_key: str = field(default="", repr=False)

    def child_env(self) -> dict[str, str] | None:
        """The environment of the server and the generator: this one, with the key in it (None:
        this one as it is)."""
        return {**os.environ, API_KEY_ENV: self.api_key} if self.api_key else None

    def verify(self) -> bool | str:
        """What the runner checks an https server's certificate against: the generator's
        CA_FILE."""
        return client_verify(self.generator_options.get("CA_FILE") or "")

    def limit_s(self) -> float:
        """How long the whole run may take."""
        duration_s = self.duration_s if math.isfinite(self.duration_s) else 0.0
        return self.run_timeout_s or duration_s + self.drain_timeout_s + 300.0

    def params(self, point: GridPoint) -> dict[str, Any]:
        """run.json's ``params`` as this run's server and generator will write them, known
        before it runs: the grid compares their identity with a finished run's."""
        server, generator = self.server_options, self.generator_options
        traffic = traffic_params(
            pattern=point.pattern,
            pattern_params={name: generator[name.upper()]
                            for name in pattern_options(point.pattern)
                            if name.upper() in generator},
            mean_rps=point.mean_rps, duration_s=self.duration_s,
            seed=point.seed(self.base_seed), repeat=point.repeat,
            model_mix=generator.get("MODEL_MIX"))
        return run_params(
            traffic, strategy=point.strategy,
            strategy_params=make_strategy(point.strategy, **strategy_options(server)).params(),
            sla_s=point.sla_s, max_new_tokens=server.get("MAX_NEW_TOKENS"),
            models=list(server.get("MODELS") or generator.get("MODEL_MIX") or []),
            engine="hf", profiles=self.profiles, drain_timeout_s=self.drain_timeout_s,
            max_queue=server.get("MAX_QUEUE"), decode=server.get("DECODE", "eager"),
            host_cache=server.get("HOST_CACHE", True),
            engine_process=server.get("ENGINE_PROCESS", True),
            pin_cores=server.get("PIN_CORES", True), tls=bool(server.get("TLS_CERT")),
            api_key_required=bool(self.api_key)) | self.extra_params

    def missing_inputs(self) -> list[str]:
        """What this machine lacks of the files the run reads: the two scripts, a folder per
        served model, the prompts, the profiles, the trace; empty when all are there. (A Ray
        node runs this too, so that a node without the files fails with their names.)"""
        server, generator = self.server_options, self.generator_options

        def here(value: Any) -> Path:  # the children run in ROOT
            return ROOT / Path(value)  # an absolute path stays as it is

        missing = [str(ROOT / s) for s in ("api_scheduler_experiments.py", "api_calls.py")
                   if not (ROOT / s).is_file()]
        models_dir = here(server.get("MODELS_DIR", "models"))
        missing += [f"{models_dir / m}/config.json" for m in server.get("MODELS", [])
                    if not (models_dir / m / "config.json").is_file()]
        workloads = here(generator.get("WORKLOADS_DIR", "workloads"))
        if not any(workloads.glob("*.json")):
            missing.append(f"{workloads}/*.json (the prompts)")
        profiles_dir = here(server.get("PROFILES_DIR", "profiling_results"))
        name = str(server.get("PROFILES", "auto"))
        if "," not in name and not here(name).is_dir():  # a set's name, or auto: any set
            wanted = "" if name == "auto" else name
            missing += [f"{profiles_dir}/{kind}_{wanted}*.csv" for kind in PROFILE_KINDS
                        if not any(profiles_dir.glob(f"{kind}_{wanted}*.csv"))]
        trace = generator.get("TRACE_PATH")
        if trace and not here(trace).is_file():
            missing.append(str(here(trace)))
        tls_files = [server.get("TLS_CERT"), server.get("TLS_KEY"), generator.get("CA_FILE")]
        missing += [str(here(f)) for f in tls_files if f and not here(f).is_file()]
        return missing


def _failed_run_json(run_dir: Path, point: GridPoint, spec: RunSpec, reason: str,
                     check: dict[str, Any]) -> dict[str, Any]:
    """run.json of a run that did not finish: the server's if it wrote one, else the grid's
    parameters, with the failure and the accounting of the rows that were flushed."""
    try:
        run = read_run_json(run_dir)
    except RunDirError:
        run = with_identity({"run_id": point.run_id, "params": spec.params(point),
                             "environment": {}})
    run["status"] = "failed"
    run["failure"] = reason
    run["accounting"] = check["counts"]
    return run


def run_point(point: GridPoint, spec: RunSpec, log=print) -> dict[str, Any]:
    """Run one grid point; returns its run.json (status complete or failed). KeyboardInterrupt
    stops both children and leaves the staged run to be redone."""
    staging = _fresh_staging(spec, point)
    server_options = {**spec.server_options, "MODE": point.strategy, "SLA": point.sla_s,
                      "DRAIN_TIMEOUT_S": spec.drain_timeout_s}
    children: list[Child] = []
    missing = spec.missing_inputs()
    reason = f"missing on {socket.gethostname()}: {', '.join(missing)}" if missing else ""
    started = time.monotonic()
    try:
        if not reason:
            try:
                server, url = start_server(server_options, staging, staging / "server.log",
                                           spec.host, spec.port, spec.start_timeout_s,
                                           verify=spec.verify(), env=spec.child_env())
                children.append(server)
            except ServerUnavailable as exc:
                reason = f"server did not start: {exc}{last_error(staging / 'server.log')}"
        if not reason:
            generator_argv = script_argv("api_calls.py", {
                **spec.generator_options, "URL": url, "PATTERN": point.pattern,
                "MEAN": point.mean_rps, "DURATION_S": spec.duration_s,
                "SEED": point.seed(spec.base_seed), "REPEAT": point.repeat, "RUN_DIR": staging})
            generator = Child.start("generator", generator_argv, staging / "generator.log",
                                    cores=server_side_cores(spec.server_options),
                                    env=spec.child_env())
            children.append(generator)
            reason = wait_for_children(generator, server, started + spec.limit_s())
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        reason = f"runner error: {type(exc).__name__}: {exc}"
    finally:
        for child in reversed(children):
            child.stop()
    return _keep(staging, point, spec, reason, started, log)


def keep_unrun(point: GridPoint, spec: RunSpec, reason: str, log=print,
               files_lost: bool = False) -> dict[str, Any]:
    """Keep a run that did not run here as failed, with ``reason``, in ``spec.results_dir`` as
    run_point keeps its failures; its run.json. ``files_lost``: it ran elsewhere and its files
    are gone (its Ray node died), so its books cannot be checked."""
    lost = ["the run's files were lost with its task: what it issued is unknown"]
    return _keep(_fresh_staging(spec, point), point, spec, reason, time.monotonic(), log,
                 lost if files_lost else [])


def promote(staging: Path, final: Path) -> None:
    """Move a staged run directory to its final place (replacing an earlier attempt), and
    remove the staging area when nothing else is staged there."""
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    with contextlib.suppress(OSError):
        staging.parent.rmdir()  # .partial, when nothing else is staged


def _fresh_staging(spec: RunSpec, point: GridPoint) -> Path:
    staging = spec.results_dir / PARTIAL_DIR / point.run_id
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _keep(staging: Path, point: GridPoint, spec: RunSpec, reason: str, started: float,
          log, problems: Sequence[str] = ()) -> dict[str, Any]:
    """Check the staged run's books (adding ``problems``), complete its run.json (failed with
    ``reason`` when there is one) and move it to RESULTS_DIR/<run_id>; the run.json."""
    final = spec.results_dir / point.run_id
    check = check_server_run(staging)
    if problems:
        check = {**check, "ok": False, "problems": [*check["problems"], *problems]}
    if not reason:
        try:
            run = read_run_json(staging)
        except RunDirError as exc:
            run, reason = {}, f"the server wrote no readable run.json ({exc})"
        if not reason and run.get("status") != "complete":
            reason = f"server ended the run as {run.get('status')!r}"
    if reason:
        run = _failed_run_json(staging, point, spec, reason, check)
        logs = f"; see {final}/server.log" if (staging / "server.log").is_file() else ""
        log(f"  {point.run_id}: FAILED: {reason}{logs}")
    run["accounting_check"] = check
    run.setdefault("params", {}).update(
        {k: v for k, v in spec.extra_params.items() if k not in run["params"]})
    asked = run_identity(spec.params(point))
    if run.get("params_hash") != params_hash(asked):
        # The server recorded other parameters than the grid asked for (a bug, or an older
        # server): keep what it recorded and say where they differ.
        run["params_mismatch"] = differences(asked, run.get("identity") or {})
        log(f"  {point.run_id}: the server recorded other parameters than asked: "
            f"{'; '.join(run['params_mismatch'])}")
    wall_s = time.monotonic() - started
    run["wall_time_s"] = round(wall_s, 3)
    run["wall_started_epoch_s"] = round(time.time() - wall_s, 3)  # when the runner began it
    keep_run(staging, final, run)
    return run


def keep_run(staging: Path, final: Path, run: dict[str, Any]) -> None:
    """Write the run's run.json and move it from the staging area to its place."""
    write_json_atomic(staging / "run.json", run)
    promote(staging, final)


