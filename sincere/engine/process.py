"""The engine in a process of its own, so that the HTTP side never holds the lock the model needs.

A server's request threads parse JSON, validate, record and answer while the scheduler thread
runs batches; in one process they all take turns at Python's interpreter lock, and a burst of
arrivals made the tiny models' batches 18-23% slower than profiled on a 2-core machine. vLLM moved
its engine core into a process of its own for this reason. ``EngineProcess`` starts the very
``sincere.engine.engine.Engine`` in a child process (a fresh interpreter, ``python -m
sincere.engine.process``, so no thread or CUDA state is inherited and no script is re-run) and
forwards every call to it over a socket pair; it answers to the same attributes and methods, so the
server, the profilers and the tests use it as they use an engine. The profilers run their engine
the same way, so that a profile is measured in the layout the server runs in.

The two processes can also be kept apart (Linux): ``split_cores`` gives the server's side (its
threads, and the traffic generator the runner starts beside it) the first half of the cores and
the engine the second half, one core each on a 2-core machine, so that neither side's threads
are scheduled onto the other's cores.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from sincere import REPO_ROOT
from sincere.engine.allocator import keep_freed_memory
from sincere.host.processes import die_with_parent, split_cores

# The attributes that change as the engine works: the child sends their values with every answer
# and the parent keeps them, so that reading one (a /health or /status during a batch) never
# waits for the batch. Every other public attribute is a method or a value fixed at start.
_LIVE_ATTRIBUTES = frozenset({"resident", "host_cached"})


class EngineProcessError(RuntimeError):
    """The engine's process died or cannot be reached."""


def _serve(conn: Connection) -> None:
    """The child: build the engine it is sent, then answer calls until the pipe closes."""
    engine_kwargs, cpu_threads, cores = conn.recv()
    if cores:
        os.sched_setaffinity(0, cores)
    keep_freed_memory()  # before the engine allocates anything
    from sincere.engine.engine import Engine, set_cpu_threads

    try:
        engine = Engine(**engine_kwargs)
        if engine.device.type == "cpu":
            # 0: every core the engine was given (all but one, without pinning).
            set_cpu_threads(cpu_threads or (len(cores) if cores else 0))
        public = [name for name in dir(engine) if not name.startswith("_")]
        methods = sorted(name for name in public if name not in _LIVE_ATTRIBUTES
                         and callable(getattr(type(engine), name, None)))
        values = {name: getattr(engine, name) for name in public
                  if name not in methods and name not in _LIVE_ATTRIBUTES}
        conn.send(("ready", (methods, values), _live(engine)))
    except Exception as exc:  # noqa: BLE001 - the parent raises it
        conn.send(("error", _portable(exc), {}))
        return
    while True:
        try:
            name, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            result = getattr(engine, name)(*args, **kwargs)
            conn.send(("ok", result, _live(engine)))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            conn.send(("error", _portable(exc), _live(engine)))


def _live(engine: Any) -> dict[str, Any]:
    return {name: getattr(engine, name) for name in _LIVE_ATTRIBUTES}


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling, else a RuntimeError naming its class (messages of the
    engine name classes, lengths and paths, never prompt text)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class EngineProcess:
    """An ``Engine`` running in a child process; the same attributes and methods, forwarded.

    ``engine_kwargs`` are Engine's arguments; ``cpu_threads`` its torch threads on a CPU (0: all
    the engine's cores, or all but one unpinned); ``pin`` splits the cores between this process
    and the engine's (`split_cores`) until ``close``. Calls are serialised: the engine does one
    thing at a time, as in-process.
    """

    def __init__(self, engine_kwargs: dict[str, Any], cpu_threads: int = 0, pin: bool = False,
                 start_timeout_s: float = 300.0) -> None:
        split = split_cores() if pin else None
        self._affinity = os.sched_getaffinity(0) if split else None
        self._conn, child_end = multiprocessing.Pipe()
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sincere.engine.process", str(child_end.fileno())],
            pass_fds=[child_end.fileno()], stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path}, preexec_fn=die_with_parent)
        child_end.close()
        self._lock = threading.Lock()
        self._conn.send((engine_kwargs, cpu_threads, split[1] if split else None))
        if split:
            os.sched_setaffinity(0, split[0])
        self.cores = {"server": sorted(split[0]), "engine": sorted(split[1])} if split else None
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise EngineProcessError(f"the engine process did not start in {start_timeout_s} s")
        self._live: dict[str, Any] = {}
        methods, values = self._receive()
        self._methods = set(methods)
        self.__dict__.update(values)

    def _receive(self) -> Any:
        try:
            status, payload, live = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise EngineProcessError(self._gone()) from exc
        self._live = live  # one assignment: a reader sees the old values or the new ones
        if status == "error":
            raise payload
        return payload

    def _gone(self) -> str:
        code = self._process.poll()
        return ("the engine process cannot be reached" if code is None
                else f"the engine process died (exit code {code})")

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        with self._lock:
            try:
                self._conn.send((name, args, kwargs))
            except (OSError, ValueError) as exc:
                raise EngineProcessError(self._gone()) from exc
            return self._receive()

    def __getattr__(self, name: str) -> Any:
        # Called only for what __init__ did not set: live attributes and methods.
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _LIVE_ATTRIBUTES:
            return self.__dict__["_live"][name]  # as of the engine's last answer
        if name in self.__dict__.get("_methods", ()):
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._call(name, args, kwargs)
            call.__name__ = name
            return call
        raise AttributeError(f"the engine has no attribute {name!r}")

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the engine's process (closing the pipe ends its loop) and give this process
        back the cores it had."""
        if self._affinity is not None:
            os.sched_setaffinity(0, self._affinity)
        self._conn.close()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5.0)


def start_engine(own_process: bool, engine_kwargs: dict[str, Any], cpu_threads: int = 0,
                 pin: bool = True) -> Any:
    """The engine a script asked for: an ``EngineProcess`` (``own_process``, cores split when
    ``pin``), or an ``Engine`` in this process, each with its torch threads set on a CPU and
    its process keeping the memory its batches free (sincere.engine.allocator)."""
    if own_process:
        return EngineProcess(engine_kwargs, cpu_threads, pin=pin)
    from sincere.engine.engine import Engine, set_cpu_threads

    keep_freed_memory()
    engine = Engine(**engine_kwargs)
    if engine.device.type == "cpu":
        set_cpu_threads(cpu_threads)
    return engine


def main(argv: list[str]) -> int:
    """``python -m sincere.engine.process FD``: serve the engine on the connection ``FD``."""
    conn = Connection(int(argv[0]))
    with contextlib.suppress(KeyboardInterrupt):
        _serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
