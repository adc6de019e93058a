"""The experiment server's HTTP layer (Flask): validation, JSON errors, and the run's endpoints.

    POST   /inference      {"prompt", "model_alias"[, "request_id"]} -> the request's outcome
    POST   /start          {"params": {...}} (optional): the run's clock starts now
    POST   /stop           {"issued": N, "params": {...}, "wait": true}: drain, write, totals
    GET    /health, /status
    GET    /models; POST /models {"alias"[, "path"]}; DELETE /models/<alias>
    POST   /v1/completions, /v1/chat/completions; GET /v1/models (sincere.serving.openai_api)
    GET    /metrics (the run's counters for Prometheus scrapers, sincere.serving.prometheus)

Every call to /inference (or /v1/completions, /v1/chat/completions), and every call to a wrong
path or with a wrong method, ends in requests.csv with a status; bad input gets a 4xx and
``{"error": ...}`` saying what was wrong (OpenAI's error object under /v1/).
Error messages name fields, types and lengths, never the prompt's content.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from sincere.profiles.profile_set import ProfileError
from sincere.serving.admission import Pending, Refused
from sincere.serving.server import ExperimentServer

log = logging.getLogger("sincere.serving")

INFERENCE_FIELDS = ("prompt", "model_alias")
OPTIONAL_INFERENCE_FIELDS = ("request_id",)
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MODEL_ALIAS = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# The calls that are requests of the run: recorded even when refused, counted while in flight.
INFERENCE_PATHS = ("/inference", "/v1/completions", "/v1/chat/completions")


@dataclass(frozen=True)
class Limits:
    """What a request may carry."""

    max_prompt_chars: int = 32_000
    max_body_bytes: int = 256 * 1024


class InputError(Exception):
    """Input the server refuses: an HTTP status and a message naming what was wrong."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                        type(value).__name__)


def parse_json_body(raw: bytes, content_type: str | None) -> Any:
    """The body as JSON, or InputError saying why not (415 for a non-JSON content type)."""
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise InputError(f"Content-Type must be application/json, got "
                         f"{content_type.split(';')[0].strip()[:60]!r}", 415)
    if not raw.strip():
        raise InputError("the body is empty: send a JSON object")
    try:
        return json.loads(raw.decode("utf-8-sig"))  # JSON over HTTP is UTF-8 (RFC 8259)
    except UnicodeDecodeError:
        raise InputError("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        # The position only: the message must not quote the body, which holds the prompt.
        raise InputError(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    except RecursionError:
        raise InputError("the body is nested too deeply") from None


def parse_inference(body: Any, limits: Limits) -> tuple[str, str, str | None]:
    """``(prompt, model_alias, request_id or None)`` from a /inference body, or InputError."""
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, got {_type_name(body)}")
    missing = [f for f in INFERENCE_FIELDS if f not in body]
    if missing:
        raise InputError(f"missing field(s): {', '.join(missing)} (expected "
                         f"{{\"prompt\": ..., \"model_alias\": ...}})")
    extra = sorted(str(k)[:40] for k in body if k not in INFERENCE_FIELDS
                   + OPTIONAL_INFERENCE_FIELDS)
    if extra:
        raise InputError(f"unknown field(s): {', '.join(extra)}; allowed: "
                         f"{', '.join(INFERENCE_FIELDS + OPTIONAL_INFERENCE_FIELDS)}")
    prompt, model, request_id = body["prompt"], body["model_alias"], body.get("request_id")
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {_type_name(prompt)}")
    if not isinstance(model, str):
        raise InputError(f"model_alias must be a string, got {_type_name(model)}")
    if not MODEL_ALIAS.match(model):
        raise InputError("model_alias must be 1 to 100 letters, digits, '.', '_' or '-'")
    if not prompt.strip():
        raise InputError("prompt is empty")
    if len(prompt) > limits.max_prompt_chars:
        raise InputError(f"prompt is {len(prompt)} characters; the limit is "
                         f"{limits.max_prompt_chars}", 413)
    if request_id is not None and (not isinstance(request_id, str)
                                   or not REQUEST_ID.match(request_id)):
        raise InputError("request_id must be a string of 1 to 64 letters, digits, '.', '_', "
                         "':' or '-'")
    return prompt, model, request_id


def _plain_field(body: Any, key: str, pattern: re.Pattern[str]) -> str | None:
    """A refused body's ``key`` when it is a well-formed string (to record the request under
    the model and id the caller gave), else None."""
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) and pattern.match(value) else None


def _json_error(message: str, http_status: int, retry_after_s: int | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = http_status
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


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


def create_app(server: ExperimentServer, limits: Limits = Limits(),
               info: dict[str, Any] | None = None) -> Flask:
    """The Flask app over one run's ExperimentServer."""
    app = Flask("sincere")
    # The body limit is checked by read_body, not MAX_CONTENT_LENGTH: werkzeug would cut a
    # chunked body at the limit without a word, and the truncated JSON would look malformed.
    app.config["SINCERE_MAX_BODY_BYTES"] = limits.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    in_flight = InFlight()
    app.extensions["sincere_in_flight"] = in_flight
    info = dict(info or {})

    def record_refusal(model: str = "") -> None:
        """Record the current /inference call (or wrong path or method) as rejected, once."""
        if getattr(g, "recorded", False):
            return
        g.recorded = True
        request_id = server.new_request_id(getattr(g, "request_id", None)) \
            or server.new_request_id()
        server.reject(request_id, model or getattr(g, "model", ""))

    @app.before_request
    def count_inference() -> None:
        if request.path in INFERENCE_PATHS:
            in_flight.enter()
            g.counted = True

    @app.after_request
    def release_inference(response: Response) -> Response:
        if getattr(g, "counted", False):
            g.counted = False
            response.call_on_close(in_flight.leave)
        return response

    @app.teardown_request
    def release_on_error(_exc: BaseException | None) -> None:
        if getattr(g, "counted", False):  # after_request did not run
            g.counted = False
            in_flight.leave()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        if request.path in INFERENCE_PATHS or code in (404, 405):
            record_refusal()
        if code == 404:
            message = (f"no such endpoint: {request.method} {request.path[:80]}; endpoints: "
                       "POST /inference, POST /start, POST /stop, GET /health, GET /status, "
                       "GET|POST /models, DELETE /models/<alias>, POST /v1/completions, "
                       "POST /v1/chat/completions, GET /v1/models, GET /metrics")
        elif code == 405:
            allowed = ", ".join(sorted(m for m in exc.valid_methods or [] if m != "OPTIONS")) \
                if hasattr(exc, "valid_methods") else ""
            message = f"method {request.method} is not allowed on {request.path[:80]}" + (
                f"; use {allowed}" if allowed else "")
        else:
            message = exc.description or exc.name
        return _json_error(message, code)

    @app.errorhandler(InputError)
    def bad_request(exc: InputError):
        if request.path in INFERENCE_PATHS:
            record_refusal()
        return _json_error(exc.message, exc.http_status)

    @app.errorhandler(Refused)
    def refused(exc: Refused):  # submit_and_wait: the server would not queue it (recorded)
        return _json_error(exc.message, exc.http_status, exc.retry_after_s)

    @app.errorhandler(Exception)
    def server_error(exc: Exception):
        # The class name only: an exception message could quote input.
        log.error("%s %s failed: %s", request.method, request.path[:80], type(exc).__name__)
        return _json_error(f"internal error ({type(exc).__name__})", 500)

    @app.post("/inference")
    def inference():
        body = parse_json_body(read_body(limits.max_body_bytes), request.content_type)
        g.model = _plain_field(body, "model_alias", MODEL_ALIAS) or ""
        g.request_id = _plain_field(body, "request_id", REQUEST_ID)
        prompt, model, wanted_id = parse_inference(body, limits)
        request_id = server.new_request_id(wanted_id)
        if request_id is None:
            g.request_id = None
            raise InputError(f"request_id {wanted_id!r} was already used in this run", 409)
        pending = submit_and_wait(server, request_id, model, prompt)
        outcome = dict(pending.outcome)
        http_status = outcome.pop("http_status")
        if outcome["status"] == "ok":
            outcome["text"] = pending.text
        return jsonify(outcome), http_status

    @app.post("/start")
    def start():
        body = _control_body()
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise InputError("params must be an object")
        begun = server.begin(params)
        return jsonify(begun=begun, now_s=round(server.now(), 6),
                       started_epoch_s=server.started_epoch_s)

    @app.post("/stop")
    def stop():
        body = _control_body()
        issued, params, wait = body.get("issued"), body.get("params", {}), body.get("wait", True)
        if issued is not None and (isinstance(issued, bool) or not isinstance(issued, int)
                                   or issued < 0):
            raise InputError("issued must be a non-negative integer")
        if not isinstance(params, dict):
            raise InputError("params must be an object")
        if not isinstance(wait, bool):
            raise InputError("wait must be true or false")
        run = server.stop(issued, params, timeout_s=None if wait else 0)
        if not server.finished:
            return jsonify(status="draining", **server.status()), 202
        return jsonify(status="finished", run_id=run.get("run_id"),
                       accounting=run.get("accounting"), summary=run.get("summary"))

    @app.get("/health")
    def health():
        return jsonify(status="ok", pid=os.getpid(), models=server.models,
                       resident=server.engine.resident, strategy=server.strategy.name,
                       sla_s=server.sla_s, draining=server.draining, finished=server.finished,
                       run_dir=str(server.run_dir), **info)

    @app.get("/status")
    def status():
        return jsonify(**server.status(), in_flight=in_flight.count)

    @app.get("/models")
    def list_models():
        view = []
        for model in server.models:
            profile = server.profiles[model]
            view.append({"alias": model, "resident": server.engine.resident == model,
                         "best_batch": profile.best_batch(server.max_new_tokens),
                         "largest_batch": profile.largest_batch(server.max_new_tokens),
                         "load_s": round(server.profiles.load_s(model), 4)})
        return jsonify(models=view, removed=server.removed_models)

    @app.post("/models")
    def add_model():
        body = _control_body()
        alias, path = body.get("alias"), body.get("path")
        if not isinstance(alias, str) or not MODEL_ALIAS.match(alias):
            raise InputError("alias must be 1 to 100 letters, digits, '.', '_' or '-'")
        if path is not None and not isinstance(path, str):
            raise InputError("path must be a string (a model folder)")
        if alias in server.models and alias not in server.broken_models:
            raise InputError(f"model {alias!r} is already served", 409)
        try:
            server.profiles[alias]
        except ProfileError:
            raise InputError(f"no profile for {alias!r} in the profile set this run uses; "
                             "profile the model first (run_profiling.sh)", 422) from None
        try:
            if path is not None:
                server.engine.add_model_path(alias, Path(path))
            elif alias not in server.engine.available_models():
                raise InputError(f"no model folder {alias!r} in the models folder; give its "
                                 "path", 422)
        except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
            raise InputError(str(exc), 422) from None
        server.add_model(alias)
        log.info("model %s added", alias)
        return jsonify(added=alias, models=server.models), 201

    @app.delete("/models/<alias>")
    def remove_model(alias: str):
        try:
            failed = server.remove_model(alias)
        except KeyError:
            raise InputError(f"model {alias[:100]!r} is not served; served: "
                             f"{', '.join(server.models) or 'none'}", 404) from None
        return jsonify(removed=alias, queued_requests_failed=failed, models=server.models)

    from sincere.serving import (
        openai_api,
        prometheus,  # they build on this module's helpers
    )

    openai_api.register(app, server, limits)
    prometheus.register(app, server)
    return app


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


def read_body(limit_bytes: int) -> bytes:
    """The request body, or a 413 when it is larger than ``limit_bytes`` (also for a chunked
    body, which has no Content-Length to check first)."""
    if request.content_length is not None and request.content_length > limit_bytes:
        raise InputError(f"the body is larger than {limit_bytes} bytes", 413)
    data = request.stream.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise InputError(f"the body is larger than {limit_bytes} bytes", 413)
    return data


def _control_body() -> dict[str, Any]:
    """The JSON object of a control call (an empty body means {})."""
    raw = read_body(current_app.config["SINCERE_MAX_BODY_BYTES"])
    if not raw.strip():
        return {}
    body = parse_json_body(raw, request.content_type)
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, got {_type_name(body)}")
    return body
