"""The experiment app's hooks (a Flask blueprint): JSON errors, refusals recorded, calls in flight.

Every call of a run's request path (``INFERENCE_PATHS``), and every call to a wrong path or with
a wrong method, ends in requests.csv: a call refused before it reached the server's intake is
recorded as rejected here, once (``record_refusal``); ``submit_and_wait`` hands a checked
request to the server and marks it recorded, whatever the server answers. Errors are answered
as ``{"error": ...}`` with their HTTP status (the OpenAI blueprint rewrites them under /v1/);
an unexpected exception is named by its class only, as its message could quote input. The calls
of the request paths whose answer has not been sent are counted (``InFlight``), so that the
process can wait for the last answers before it exits. A call refused for its API key never
reaches these hooks (``sincere.serving.guard`` answers it first): it is not a request of the run.
"""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from sincere.serving.admission import Pending, Refused
from sincere.serving.inputs import InputError
from sincere.serving.server import ExperimentServer

log = logging.getLogger("sincere.serving")

# The calls that are requests of the run: recorded even when refused, counted while in flight.
INFERENCE_PATHS = ("/inference", "/v1/completions", "/v1/chat/completions")
ENDPOINTS = ("POST /inference, POST /start, POST /stop, GET /health, GET /status, "
             "GET|POST /models, DELETE /models/<alias>, POST /v1/completions, "
             "POST /v1/chat/completions, GET /v1/models, GET /metrics")


class InFlight:
    """Counts calls of INFERENCE_PATHS whose response has not been sent yet (clean shutdown)."""

    def __init__(self) -> None:
        self._count = 0
        self._zero = threading.Condition()

    def enter(self) -> None:
        with self._zero:
            self._count += 1

    def leave(self) -> None:
        with self._zero:
            self._count -= 1
            if self._count == 0:
                self._zero.notify_all()

    def wait_zero(self, timeout_s: float) -> bool:
        with self._zero:
            return self._zero.wait_for(lambda: self._count == 0, timeout_s)

    @property
    def count(self) -> int:
        return self._count


def json_error(message: str, http_status: int, retry_after_s: int | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = http_status
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def submit_and_wait(server: ExperimentServer, request_id: str, model: str,
                    prompt: str) -> Pending:
    """Queue the current call's request and wait until its batch has answered it. Either way
    the request is recorded: a ``Refused`` (the server would not queue it) goes on to the
    app's error handler."""
    g.request_id = request_id
    try:
        pending = server.submit(request_id, model, prompt)
    except Refused:
        g.recorded = True  # submit recorded it
        raise
    g.recorded = True
    pending.done.wait()
    return pending


def create_blueprint(server: ExperimentServer, in_flight: InFlight) -> Blueprint:
    """The app-wide hooks over one run's server (register it before the endpoints)."""
    blueprint = Blueprint("hooks", __name__)

    def record_refusal() -> None:
        """Record the current /inference call (or wrong path or method) as rejected, once."""
        if getattr(g, "recorded", False):
            return
        g.recorded = True
        request_id = server.new_request_id(getattr(g, "request_id", None)) \
            or server.new_request_id()
        server.reject(request_id, getattr(g, "model", ""))

    @blueprint.before_app_request
    def count_inference() -> None:
        if request.path in INFERENCE_PATHS:
            in_flight.enter()
            g.counted = True

    @blueprint.after_app_request
    def release_inference(response: Response) -> Response:
        if getattr(g, "counted", False):
            g.counted = False
            response.call_on_close(in_flight.leave)
        return response

    @blueprint.teardown_app_request
    def release_on_error(_exc: BaseException | None) -> None:
        if getattr(g, "counted", False):  # after_request did not run
            g.counted = False
            in_flight.leave()

    @blueprint.app_errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if request.path in INFERENCE_PATHS or code in (404, 405):
            record_refusal()
        if code == 404:
            message = (f"no such endpoint: {request.method} {request.path[:80]}; endpoints: "
                       f"{ENDPOINTS}")
        elif code == 405:
            allowed = ", ".join(sorted(m for m in exc.valid_methods or [] if m != "OPTIONS")) \
                if hasattr(exc, "valid_methods") else ""
            message = f"method {request.method} is not allowed on {request.path[:80]}" + (
                f"; use {allowed}" if allowed else "")
        else:
            message = exc.description or exc.name
        return json_error(message, code)

    @blueprint.app_errorhandler(InputError)
    def bad_request(exc: InputError) -> Response:
        if request.path in INFERENCE_PATHS:
            record_refusal()
        return json_error(exc.message, exc.http_status)

    @blueprint.app_errorhandler(Refused)
    def refused(exc: Refused) -> Response:  # submit_and_wait: not queued (recorded)
        return json_error(exc.message, exc.http_status, exc.retry_after_s)

    @blueprint.app_errorhandler(Exception)
    def server_error(exc: Exception) -> Response:
        # The class name only: an exception message could quote input.
        log.error("%s %s failed: %s", request.method, request.path[:80], type(exc).__name__)
        return json_error(f"internal error ({type(exc).__name__})", 500)

    return blueprint
