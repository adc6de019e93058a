"""Run one grid point for real: server and generator as subprocesses, then check and keep the run.

Each run is staged in ``RESULTS_DIR/.partial/<run_id>`` and moved to ``RESULTS_DIR/<run_id>``
once it has ended, complete or failed, so a folder under RESULTS_DIR is always a finished
attempt and an interrupted one never looks finished. Children run in their own process groups
and are always stopped (SIGTERM, then SIGKILL) before ``run_point`` returns or raises.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sincere import REPO_ROOT
from sincere.engine.process import split_cores
from sincere.grid.points import GridPoint
from sincere.host.processes import die_with_parent
from sincere.runs.identity import differences, params_hash, run_identity, with_identity
from sincere.runs.records import write_json_atomic
from sincere.scheduling.strategies import make_strategy
from sincere.scheduling.strategies import options_from_constants as strategy_options
from sincere.schemas import REQUEST_STATUSES
from sincere.traffic.client import ServerUnavailable, wait_for_server
from sincere.traffic.patterns import pattern_options

ROOT = REPO_ROOT  # where the scripts are
PARTIAL_DIR = ".partial"
PROFILE_KINDS = ("model_loading_times", "batch_profiling")  # the two files of a profile set
STOP_GRACE_S = 15.0  # after SIGTERM, how long a child may take to write its files


@dataclass
class Child:
    """A subprocess in its own process group, with its output in a log file."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log_path: Path,
              cores: set[int] | None = None) -> Child:
        """Start ``argv``; ``cores``: the CPU cores it (and every thread it starts) may use."""
        def prepare() -> None:  # in the child, before exec
            die_with_parent()
            if cores:
                os.sched_setaffinity(0, cores)

        with log_path.open("ab") as log_file:
            process = subprocess.Popen(list(argv), cwd=ROOT, stdout=log_file,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=prepare)
        return cls(name, process, log_path)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace_s``; the exit code (None if unknown)."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            if not self.alive:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything the child left behind
        return self.process.poll()


def flag_args(options: dict[str, Any]) -> list[str]:
    """``{"MEAN": 4.0, "MODEL_MIX": {...}}`` -> ``["--mean", "4.0", "--model-mix", "a=0.1"]``."""
    argv: list[str] = []
    for name, value in options.items():
        argv.append("--" + name.lower().replace("_", "-"))
        if isinstance(value, dict):
            argv.extend(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        else:
            argv.append(str(value))
    return argv


def script_argv(script: str, options: dict[str, Any]) -> list[str]:
    """The command line running one of the repository's scripts with these constants."""
    return [sys.executable, str(ROOT / script), *flag_args(options)]


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

    def limit_s(self) -> float:
        """How long the whole run may take."""
        duration_s = self.duration_s if math.isfinite(self.duration_s) else 0.0
        return self.run_timeout_s or duration_s + self.drain_timeout_s + 300.0

    def params(self, point: GridPoint) -> dict[str, Any]:
        """run.json's ``params`` as this run's server and generator will write them, known
        before it runs: the grid compares their identity with a finished run's."""
        server, generator = self.server_options, self.generator_options
        strategy = make_strategy(point.strategy, **strategy_options(server))
        return {
            "strategy": point.strategy, "strategy_params": strategy.params(),
            "pattern": point.pattern,
            "pattern_params": {name: generator[name.upper()]
                               for name in pattern_options(point.pattern)
                               if name.upper() in generator},
            "mean_rps": point.mean_rps, "sla_s": point.sla_s, "duration_s": self.duration_s,
            "seed": point.seed(self.base_seed), "repeat": point.repeat,
            "models": list(server.get("MODELS") or generator.get("MODEL_MIX") or []),
            "model_mix": generator.get("MODEL_MIX"),
            "max_new_tokens": server.get("MAX_NEW_TOKENS"), "engine": "hf",
            "profiles": self.profiles, "drain_timeout_s": self.drain_timeout_s,
            "max_queue": server.get("MAX_QUEUE"), "decode": server.get("DECODE", "eager"),
            "host_cache": server.get("HOST_CACHE", True),
            "engine_process": server.get("ENGINE_PROCESS", True),
            "pin_cores": server.get("PIN_CORES", True), **self.extra_params,
        }

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
        return missing


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def check_accounting(run_dir: Path) -> dict[str, Any]:
    """Every issued request in requests.csv exactly once with a status, and the counts add up:
    issued = received = ok + rejected + failed + unserved + shed."""
    issued_ids = [r["request_id"] for r in read_rows(run_dir / "schedule.csv")]
    client_ids = [r["request_id"] for r in read_rows(run_dir / "client.csv")]
    server_rows = read_rows(run_dir / "requests.csv")
    statuses = Counter(r.get("status", "") for r in server_rows)
    per_id = Counter(r["request_id"] for r in server_rows)
    problems = []
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
    bad = sorted(s for s in statuses if s not in REQUEST_STATUSES)
    if bad:
        problems.append(f"unknown status(es) in requests.csv: {', '.join(bad)}")
    counts = {"issued": len(issued_ids), "received": len(server_rows),
              "completed": statuses["ok"], "rejected": statuses["rejected"],
              "failed": statuses["failed"], "unserved": statuses["unserved"],
              "shed": statuses["shed"]}
    if counts["issued"] != counts["received"]:
        problems.append(f"issued {counts['issued']} != received {counts['received']}")
    return {"ok": not problems, "counts": counts, "problems": problems}


def _failed_run_json(run_dir: Path, point: GridPoint, spec: RunSpec, reason: str,
                     check: dict[str, Any]) -> dict[str, Any]:
    """run.json of a run that did not finish: the server's if it wrote one, else the grid's
    parameters, with the failure and the accounting of the rows that were flushed."""
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
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
                                           spec.host, spec.port, spec.start_timeout_s)
                children.append(server)
            except ServerUnavailable as exc:
                reason = f"server did not start: {exc}{_last_error(staging / 'server.log')}"
        if not reason:
            generator_argv = script_argv("api_calls.py", {
                **spec.generator_options, "URL": url, "PATTERN": point.pattern,
                "MEAN": point.mean_rps, "DURATION_S": spec.duration_s,
                "SEED": point.seed(spec.base_seed), "REPEAT": point.repeat, "RUN_DIR": staging})
            generator = Child.start("generator", generator_argv, staging / "generator.log",
                                    cores=_server_side_cores(spec.server_options))
            children.append(generator)
            reason = _wait(generator, server, started + spec.limit_s())
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
    check = check_accounting(staging)
    if problems:
        check = {**check, "ok": False, "problems": [*check["problems"], *problems]}
    if not reason:
        try:
            run = json.loads((staging / "run.json").read_text())
        except (OSError, ValueError) as exc:
            run, reason = {}, f"the server wrote no readable run.json ({type(exc).__name__})"
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


def start_server(options: dict[str, Any], run_dir: Path, log_path: Path,
                 host: str = "127.0.0.1", port: int = 0,
                 timeout_s: float = 600.0) -> tuple[Child, str]:
    """api_scheduler_experiments.py with these constants, serving the run in ``run_dir``: the
    child and its URL once it answers as that run's server (ServerUnavailable, the child
    stopped, when it does not). Without a ``port`` the server binds a free one and writes it
    down: a port picked here and bound there could meanwhile be taken by another server (two
    runs on one Ray node), whose answers would then pass for this run's."""
    port_file = run_dir / ".port"
    server = Child.start("server", script_argv("api_scheduler_experiments.py", {
        **options, "RUN_DIR": run_dir, "HOST": host, "PORT": port,
        **({} if port else {"PORT_FILE": port_file})}), log_path)
    try:
        port = port or _read_port(port_file, timeout_s, server)
        url = f"http://{host}:{port}"
        wait_for_server(url, timeout_s, is_alive=lambda: server.alive,
                        accept=lambda health: health.get("run_dir") == str(run_dir))
    except BaseException:
        server.stop()
        raise
    return server, url


def _server_side_cores(server_options: dict[str, Any]) -> set[int] | None:
    """The cores a server that runs its engine in a process of its own keeps for its own side
    (sincere.engine.process.split_cores): the generator beside it gets the same, so that the
    engine's cores are the engine's alone; None when the server does not split them."""
    if not (server_options.get("ENGINE_PROCESS", True) and server_options.get("PIN_CORES", True)):
        return None
    split = split_cores()
    return split[0] if split else None


def _read_port(port_file: Path, timeout_s: float, server: Child) -> int:
    """The port the server bound, once it has written it down."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            port = int(port_file.read_text())
            port_file.unlink()
            return port
        if not server.alive:
            raise ServerUnavailable("the server process exited while starting")
        time.sleep(0.1)
    raise ServerUnavailable(f"the server named no port within {timeout_s:g} s")


def _last_error(log_path: Path) -> str:
    """``: <the last line starting with error:>`` of a child's log (why a server refused to
    start, e.g. no profile set), or "" when there is none."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return f": {errors[-1].removeprefix('error:').strip()}" if errors else ""


def _wait(generator: Child, server: Child, deadline: float) -> str:
    """Wait for the generator, then for the server to exit after its /stop; the failure, or ""."""
    while generator.alive:
        if time.monotonic() > deadline:
            return "the run took longer than its time limit"
        if not server.alive:
            # The server died mid-run: give the generator a moment to record the errors.
            with contextlib.suppress(subprocess.TimeoutExpired):
                generator.process.wait(30.0)
            return f"the server exited mid-run (exit code {server.process.returncode})"
        time.sleep(0.2)
    if generator.process.returncode != 0:
        return f"the generator failed (exit code {generator.process.returncode})"
    try:
        code = server.process.wait(max(1.0, min(120.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        return "the server did not exit after /stop"
    return "" if code == 0 else f"the server exited with code {code}"
