"""What a check on a lent machine found, and the process that keeps it within its time.

``Report`` (in the process that measures): its parts (ok, failed, skipped), checks (which decide
the exit status), goals (reported, met or not), skipped parts and errors, written as JSON and as
text at every change, each file replaced whole (a reader never sees half of one), with the part
running named in it.

``supervise`` (in the process the user started): runs the measuring process, copies all it
prints (Python's and C's, stdout and stderr) to the console and to ``<name>.log``, and owns the
time limit: at the limit it ends the measuring process, wherever it is (a compile cannot be
interrupted from inside), marks the part that was running as cut short, writes the results and
prints the table of everything measured, as it does when the measuring process dies. So a run
cut short or crashed still hands back its table, and the folder holds exactly three files:
``<name>.json``, ``<name>.txt`` and ``<name>.log``.

Errors are recorded by class and the first line of their message; the callers' figures are
counts, sizes and times, never prompt or generated text.
"""

from __future__ import annotations

import codecs
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

TERMINATE_GRACE_S = 10.0  # after SIGTERM, how long the measuring process has before SIGKILL


def new_results() -> dict[str, Any]:
    """The results of a check before anything ran."""
    return {"status": "running", "current_part": None, "parts": {}, "checks": [], "goals": [],
            "skipped": [], "errors": []}


def failed(data: Mapping[str, Any]) -> bool:
    """True when a check failed, an error was recorded or a part did not complete."""
    return (any(not c["passed"] for c in data["checks"]) or bool(data["errors"])
            or any(p["status"] in ("failed", "cut short") for p in data["parts"].values()))


def write_results(data: dict[str, Any], out_dir: Path, name: str,
                  format_text: Callable[[dict[str, Any]], str]) -> None:
    """``<name>.json`` and ``<name>.txt`` in ``out_dir``, each replaced whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for suffix, text in (("json", json.dumps(data, indent=2) + "\n"),
                         ("txt", format_text(data) + "\n")):
        partial = out_dir / f".{name}.{suffix}.partial"
        partial.write_text(text)
        os.replace(partial, out_dir / f"{name}.{suffix}")


class Report:
    """What a check found, written to ``out_dir`` at every change."""

    def __init__(self, out_dir: Path, name: str, format_text: Callable[[dict[str, Any]], str]
                 ) -> None:
        self.out_dir = Path(out_dir)
        self.name = name  # the files are <name>.json and <name>.txt
        self.format_text = format_text
        self.started = time.monotonic()
        self.lock = threading.RLock()
        self.data: dict[str, Any] = new_results()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def set(self, key: str, value: Any) -> None:
        with self.lock:
            self.data[key] = value
        self.write()

    def check(self, name: str, passed: bool, detail: str) -> None:
        with self.lock:
            self.data["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        self.write()
        print(f"  check {'ok    ' if passed else 'FAILED'} {name}: {detail}", flush=True)

    def goal(self, name: str, met: bool | None, detail: str) -> None:
        with self.lock:
            self.data["goals"].append({"name": name, "met": met, "detail": detail})
        self.write()

    def skip(self, part: str, reason: str) -> None:
        with self.lock:
            self.data["skipped"].append({"part": part, "reason": reason})
            self.data["parts"][part] = {"status": "skipped", "seconds": 0.0}
        self.write()
        print(f"[{part}] skipped: {reason}", flush=True)

    def error(self, part: str, exc: BaseException) -> None:
        """Record an error by class and the first line of its message."""
        text = str(exc).strip()
        message = text.splitlines()[0][:300] if text else ""
        with self.lock:
            self.data["errors"].append({"part": part, "error": type(exc).__name__,
                                        "message": message})
        self.write()

    def failed(self) -> bool:
        with self.lock:
            return failed(self.data)

    def run(self, part: str, work: Callable[[], None]) -> bool:
        """Run one part; its error is recorded (class and first line), never raised; False when
        it did not complete."""
        print(f"[{part}] at {self.elapsed_s():.0f} s", flush=True)
        with self.lock:
            self.data["current_part"] = part
        self.write()
        started = time.monotonic()
        status = "ok"
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - every failure is reported and the rest goes on
            status = "failed"
            self.error(part, exc)
            print(f"[{part}] FAILED: {type(exc).__name__}: {self.data['errors'][-1]['message']}",
                  flush=True)
            traceback.print_exc(limit=4)
        with self.lock:
            self.data["parts"][part] = {"status": status,
                                        "seconds": round(time.monotonic() - started, 2)}
            self.data["current_part"] = None
        self.write()
        return status == "ok"

    def write(self, final: bool = False) -> None:
        with self.lock:
            self.data["elapsed_s"] = round(self.elapsed_s(), 1)
            if final:
                self.data["status"] = "fail" if failed(self.data) else "pass"
            snapshot = copy.deepcopy(self.data)
            write_results(snapshot, self.out_dir, self.name, self.format_text)


def _pump(source: BinaryIO, log: BinaryIO) -> None:
    """Copy the measuring process's output to this process's stdout and to the log."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := source.read1(65536):
        log.write(chunk)
        log.flush()
        sys.stdout.write(decoder.decode(chunk))
        sys.stdout.flush()


def _end(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after TERMINATE_GRACE_S."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Stop:
    """Set by SIGTERM or Ctrl-C while the measuring process runs (restored after)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._set)
        return self

    def _set(self, number: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(number).name

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def supervise(command: Sequence[str], out_dir: Path, name: str, limit_s: float,
              format_text: Callable[[dict[str, Any]], str],
              env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` (the measuring process, which writes ``<name>.json`` / ``.txt`` in
    ``out_dir`` through a ``Report``) with its output copied to ``<name>.log``; its exit status.
    At ``limit_s``, or on SIGTERM or Ctrl-C here, it is ended and its running part marked as
    cut short; if it dies, that is recorded; either way the results are written and their
    table printed here (status 1)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (out_dir / f"{name}.log").open("wb") as log, _Stop() as stop:
        process = subprocess.Popen(list(command), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=dict(env) if env is not None else None)
        pump = threading.Thread(target=_pump, args=(process.stdout, log), daemon=True)
        pump.start()
        cut_short = None
        while process.poll() is None:
            if time.monotonic() - started >= limit_s:
                cut_short = {"error": "TimeLimit", "message": f"cut short at {limit_s:g} s"}
            elif stop.signal_name:
                cut_short = {"error": "Stopped", "message": f"{stop.signal_name} at "
                                                            f"{time.monotonic() - started:.0f} s"}
            if cut_short:
                _end(process)
                break
            time.sleep(0.2)
        pump.join(timeout=30)
        status = process.returncode
        for stray in out_dir.glob(f".{name}.*.partial"):
            stray.unlink()
        try:
            data = json.loads((out_dir / f"{name}.json").read_text())
        except (OSError, json.JSONDecodeError):
            data = None
        if not cut_short and data is not None and data.get("status") in ("pass", "fail"):
            return status  # it finished and said so itself
        if not cut_short and data is None and status == 2:
            return 2  # refused its arguments before measuring anything
        data = data or new_results()
        part = data.get("current_part") or "startup"
        if cut_short is None:
            died = (f"signal {signal.Signals(-status).name}" if status < 0
                    else f"exit status {status}")
            cut_short = {"error": "ProcessDied",
                         "message": f"the measuring process ended with {died}"}
        data["parts"][part] = {"status": "cut short", "seconds": None}
        data["errors"].append({"part": part, **cut_short})
        data["current_part"] = None
        data["elapsed_s"] = round(time.monotonic() - started, 1)
        data["status"] = "fail"
        write_results(data, out_dir, name, format_text)
        note = f"{cut_short['message']} during {part}: results so far in {out_dir}"
        table = format_text(data)
        log.write(f"{note}\n{table}\n".encode())
    print(f"{note}\n{table}", flush=True)
    return 1
