"""What a check on a lent machine found: its parts (ok, failed, skipped, cut short), checks
(which decide the exit status), goals (reported, met or not), skipped parts and errors, written
as JSON and as text after every part, so that a run cut short keeps what it measured.

Errors are recorded by class and the first line of their message; the callers' figures are
counts, sizes and times, never prompt or generated text.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Report:
    """What a check found, written to ``out_dir`` after every part (thread-safe: the
    time-limit watchdog writes it too)."""

    def __init__(self, out_dir: Path, name: str, format_text: Callable[[dict[str, Any]], str]
                 ) -> None:
        self.out_dir = Path(out_dir)
        self.name = name  # the files are <name>.json and <name>.txt
        self.format_text = format_text
        self.started = time.monotonic()
        self.lock = threading.RLock()
        self.current: str | None = None  # the part running now
        self.data: dict[str, Any] = {"status": "running", "parts": {}, "checks": [],
                                     "goals": [], "skipped": [], "errors": []}

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def set(self, key: str, value: Any) -> None:
        with self.lock:
            self.data[key] = value

    def check(self, name: str, passed: bool, detail: str) -> None:
        with self.lock:
            self.data["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"  check {'ok    ' if passed else 'FAILED'} {name}: {detail}", flush=True)

    def goal(self, name: str, met: bool | None, detail: str) -> None:
        with self.lock:
            self.data["goals"].append({"name": name, "met": met, "detail": detail})

    def skip(self, part: str, reason: str) -> None:
        with self.lock:
            self.data["skipped"].append({"part": part, "reason": reason})
            self.data["parts"][part] = {"status": "skipped", "seconds": 0.0}
        print(f"[{part}] skipped: {reason}", flush=True)

    def failed(self) -> bool:
        with self.lock:
            return (any(not c["passed"] for c in self.data["checks"]) or bool(self.data["errors"])
                    or any(p["status"] in ("failed", "cut short")
                           for p in self.data["parts"].values()))

    def run(self, part: str, work: Callable[[], None]) -> bool:
        """Run one part; its error is recorded (class and first line), never raised; False when
        it did not complete."""
        print(f"[{part}] at {self.elapsed_s():.0f} s", flush=True)
        self.current = part
        started = time.monotonic()
        status = "ok"
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - every failure is reported and the rest goes on
            status = "failed"
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            with self.lock:
                self.data["errors"].append({"part": part, "error": type(exc).__name__,
                                            "message": message})
            print(f"[{part}] FAILED: {type(exc).__name__}: {message}", flush=True)
            traceback.print_exc(limit=4)
        with self.lock:
            self.data["parts"][part] = {"status": status,
                                        "seconds": round(time.monotonic() - started, 2)}
            self.current = None
        self.write()
        return status == "ok"

    def write(self, final: bool = False) -> None:
        with self.lock:
            self.data["elapsed_s"] = round(self.elapsed_s(), 1)
            if final:
                self.data["status"] = "fail" if self.failed() else "pass"
            snapshot = copy.deepcopy(self.data)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"{self.name}.json").write_text(json.dumps(snapshot, indent=2) + "\n")
        (self.out_dir / f"{self.name}.txt").write_text(self.format_text(snapshot) + "\n")

    def watchdog(self, limit_s: float) -> threading.Timer:
        """A timer that, at ``limit_s``, records the running part as cut short, writes what
        was measured and ends the process with status 1 (a compile cannot be interrupted)."""
        def expire() -> None:
            with self.lock:
                part = self.current or "?"
                self.data["parts"][part] = {"status": "cut short", "seconds": None}
                self.data["errors"].append({"part": part, "error": "TimeLimit",
                                            "message": f"cut short at {limit_s:g} s"})
            self.write(final=True)
            print(f"time limit of {limit_s:g} s reached: results so far in {self.out_dir}",
                  flush=True)
            os._exit(1)

        timer = threading.Timer(limit_s, expire)
        timer.daemon = True
        timer.start()
        return timer
