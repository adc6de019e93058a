"""How a run ends when no generator stops it: an idle timeout, or SIGTERM / Ctrl-C, drains it.

SINCERE's generator calls ``POST /start`` and ends the run with ``POST /stop``; a signal then
aborts the run (queued requests ``unserved``, status ``interrupted``), as the runner expects. A
standard load generator sends only OpenAI requests: the run begins at the first one, and ends
the way ``/stop`` would end it (the queues drain, every request is recorded, run.json is written
with status ``complete``) either after ``idle_stop_s`` seconds in which no request arrived,
none was waiting and none was being answered, or at the first SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask, request

from sincere.serving.server import ExperimentServer

log = logging.getLogger("sincere.serving")


class RunEnd:
    """Ends the run of ``server`` (served by ``app``) when no ``/start`` came."""

    def __init__(self, server: ExperimentServer, app: Flask, idle_stop_s: float = 0.0,
                 poll_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.idle_stop_s = idle_stop_s
        self.poll_s = poll_s
        self._clock = clock
        self._in_flight = app.extensions["sincere_in_flight"]
        self.started_by_generator = False  # a POST /start came: its /stop ends the run
        self._thread: threading.Thread | None = None
        app.before_request(self._note_start)

    def _note_start(self) -> None:
        if request.method == "POST" and request.path == "/start":
            self.started_by_generator = True

    def start(self) -> RunEnd:
        """Watch for idleness (when ``idle_stop_s`` > 0)."""
        if self.idle_stop_s > 0:
            self._thread = threading.Thread(target=self._watch, name="idle-stop", daemon=True)
            self._thread.start()
        return self

    def _activity(self) -> tuple[int, int] | None:
        """What changes whenever a request arrives or is answered; None while the run has not
        begun or a request is waiting or being answered (never idle then)."""
        status = self.server.status()
        waiting = sum(status["queues"].values())
        in_flight = self._in_flight.count
        if not status["begun"] or waiting or in_flight:
            return None
        counts = status["counts"]
        return counts["received"], sum(counts.values())

    def _watch(self) -> None:
        last, quiet_since = None, self._clock()
        while not self.server.finished and not self.server.draining:
            time.sleep(self.poll_s)
            activity = self._activity()
            now = self._clock()
            if self.started_by_generator or activity is None or activity != last:
                last, quiet_since = activity, now
                continue
            if now - quiet_since >= self.idle_stop_s:
                log.info("no request for %.0f s: the run ends (IDLE_STOP_S)", now - quiet_since)
                self.server.stop(timeout_s=0)
                return

    def on_signal(self) -> str:
        """End the run for SIGTERM / Ctrl-C: abort a generator's run, drain any other. Returns
        what was done, for the log."""
        if self.started_by_generator:
            self.server.abort("interrupted")
            return "ending the run after the running batch (queued requests unserved)"
        # From a thread: stop() takes the server's lock, which a signal handler must not wait on.
        threading.Thread(target=self.server.stop, kwargs={"timeout_s": 0}, name="signal-stop",
                         daemon=True).start()
        return "no more requests taken; draining the queues, then the run is written"
