"""The children of a real run: the server and the generator, each a script run as a
subprocess in its own process group (so that stopping it stops all it started), with its output
in a log file; starting the server until it answers as the run's server, and waiting for both.
``sincere.grid.runner`` runs a grid point with them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere import REPO_ROOT
from sincere.access import local_host, url_scheme
from sincere.host.processes import die_with_parent, split_cores
from sincere.traffic.api_modes import ServerUnavailable
from sincere.traffic.client import wait_for_server

ROOT = REPO_ROOT  # where the scripts are, and where the children run
STOP_GRACE_S = 15.0  # after SIGTERM, how long a child may take to write its files


@dataclass
class Child:
    """A subprocess in its own process group, with its output in a log file."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log_path: Path,
              cores: set[int] | None = None, env: dict[str, str] | None = None) -> Child:
        """Start ``argv``; ``cores``: the CPU cores it (and every thread it starts) may use;
        ``env``: its environment (None: this process's)."""
        def prepare() -> None:  # in the child, before exec
            die_with_parent()
            if cores:
                os.sched_setaffinity(0, cores)

        with log_path.open("ab") as log_file:
            process = subprocess.Popen(list(argv), cwd=ROOT, stdout=log_file,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=prepare, env=env)
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


def start_server(options: dict[str, Any], run_dir: Path, log_path: Path,
                 host: str = "127.0.0.1", port: int = 0, timeout_s: float = 600.0,
                 verify: bool | str = True,
                 env: dict[str, str] | None = None) -> tuple[Child, str]:
    """api_scheduler_experiments.py with these constants, serving the run in ``run_dir``: the
    child and its URL once it answers as that run's server (ServerUnavailable, the child
    stopped, when it does not). Without a ``port`` the server binds a free one and writes it
    down: a port picked here and bound there could meanwhile be taken by another server (two
    runs on one Ray node), whose answers would then pass for this run's. With ``TLS_CERT`` in
    the options the URL is https, checked against ``verify``; ``env``: the server's
    environment (its API_KEY)."""
    port_file = run_dir / ".port"
    server = Child.start("server", script_argv("api_scheduler_experiments.py", {
        **options, "RUN_DIR": run_dir, "HOST": host, "PORT": port,
        **({} if port else {"PORT_FILE": port_file})}), log_path, env=env)
    try:
        port = port or _read_port(port_file, timeout_s, server)
        address = local_host(host)
        address = f"[{address}]" if ":" in address else address
        url = f"{url_scheme(bool(options.get('TLS_CERT')))}://{address}:{port}"
        wait_for_server(url, timeout_s, is_alive=lambda: server.alive,
                        accept=lambda health: health.get("run_dir") == str(run_dir),
                        verify=verify)
    except BaseException:
        server.stop()
        raise
    return server, url


def server_side_cores(server_options: dict[str, Any]) -> set[int] | None:
    """The cores a server that runs its engine in a process of its own keeps for its own side
    (sincere.host.processes.split_cores): the generator beside it gets the same, so that the
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


def last_error(log_path: Path) -> str:
    """``: <the last line starting with error:>`` of a child's log (why a server refused to
    start, e.g. no profile set), or "" when there is none."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return f": {errors[-1].removeprefix('error:').strip()}" if errors else ""


def wait_for_children(generator: Child, server: Child, deadline: float) -> str:
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
