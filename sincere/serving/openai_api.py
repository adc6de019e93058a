"""The experiment server's OpenAI-compatible endpoints, beside ``/inference`` (a Flask blueprint).

    POST /v1/completions        {"model": alias, "prompt": str, ...}
    POST /v1/chat/completions   {"model": alias, "messages": [...], ...}
    GET  /v1/models, /v1/models/<model>

A request goes through the same intake, queues, strategy, records and accounting as
``/inference``: ``ExperimentServer.submit`` queues it, the scheduler thread runs it in a batch,
and it ends in requests.csv with a status. A chat is rendered into one prompt with the model's
chat template where its tokenizer has one (``Engine.chat_template_prompt``), else joined plainly.
``stream: true`` is answered as server-sent events once the batch has ended: a batch engine has
no token to send earlier, so a client's time to first token equals its latency. Every error
under ``/v1/`` is OpenAI's error object, with the statuses ``/inference`` uses. The request id
is the ``X-Request-Id`` header when it is well formed and new in the run (SINCERE's generator
sends one), else one of the server's: a tool that reuses ids is never refused for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from flask import Blueprint, Flask, Response, g, jsonify, request

from sincere.serving import openai_schema as schema
from sincere.serving.hooks import submit_and_wait
from sincere.serving.inputs import (
    MODEL_ALIAS,
    REQUEST_ID,
    InputError,
    Limits,
    parse_json_body,
    plain_field,
    read_body,
)
from sincere.serving.server import ExperimentServer

log = logging.getLogger("sincere.serving")

PREFIX = "/v1"


def openai_error(message: str, http_status: int) -> Response:
    response = jsonify(schema.error_body(message, http_status))
    response.status_code = http_status
    return response


def as_openai_error(response: Response) -> Response:
    """An error answered under /v1/ by the app's shared handlers (``{"error": "..."}``: bad
    JSON, a wrong method or path, a body too large) rewritten as OpenAI's error object."""
    if not request.path.startswith(f"{PREFIX}/") or response.status_code < 400 \
            or not response.is_json:
        return response
    body = response.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        # Under a completions or model path a 404 can only be about the model.
        about_model = request.path in (f"{PREFIX}/completions", f"{PREFIX}/chat/completions") \
            or request.path.startswith(f"{PREFIX}/models/")
        code = "model_not_found" if response.status_code == 404 and about_model else None
        response.set_data(json.dumps(schema.error_body(body["error"], response.status_code,
                                                       code)))
    return response


class _IgnoredFields:
    """Logs each unknown request field's name once (never its value)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def note(self, names: tuple[str, ...]) -> None:
        with self._lock:
            new = [n for n in names if n not in self._seen]
            self._seen.update(new)
        if new:
            log.warning("OpenAI request field(s) not known here, ignored: %s", ", ".join(new))


def render_prompt(server: ExperimentServer, parsed: schema.OpenAIRequest) -> str:
    """The text the engine gets: the prompt, or the chat rendered for the model."""
    if parsed.kind == schema.COMPLETIONS:
        return parsed.prompt or ""
    messages = [dict(m) for m in parsed.messages]
    render = getattr(server.engine, "chat_template_prompt", None)
    try:
        text = render(parsed.model, messages) if render is not None else None
    except Exception as exc:  # noqa: BLE001 - a template may refuse the messages (jinja raise)
        raise InputError(f"the chat template of {parsed.model!r} refused these messages "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return text if text is not None else schema.plain_chat_prompt(messages)


def create_blueprint(server: ExperimentServer, limits: Limits) -> Blueprint:
    """The /v1 endpoints over one run's server."""
    blueprint = Blueprint("openai", __name__, url_prefix=PREFIX)
    ignored = _IgnoredFields()
    started_epoch_s = int(time.time())

    def serve(kind: str) -> Response:
        body = parse_json_body(read_body(request, limits.max_body_bytes), request.content_type)
        g.model = plain_field(body, "model", MODEL_ALIAS) or ""
        wanted = request.headers.get("X-Request-Id", "")
        g.request_id = wanted if REQUEST_ID.match(wanted) else None
        parsed = schema.parse_request(kind, body, limits, server.max_new_tokens)
        ignored.note(parsed.ignored)
        known = set(server.models) | set(server.removed_models) | set(server.broken_models)
        if parsed.model not in known:
            raise InputError(f"the model {parsed.model!r} does not exist on this server; "
                             f"served: {', '.join(server.models) or 'none'} (GET /v1/models)",
                             404)
        prompt = render_prompt(server, parsed)
        if len(prompt) > limits.max_prompt_chars:
            raise InputError(f"the rendered prompt is {len(prompt)} characters; the limit is "
                             f"{limits.max_prompt_chars}", 413)
        request_id = server.new_request_id(g.request_id) or server.new_request_id()
        pending = submit_and_wait(server, request_id, parsed.model, prompt)
        outcome = dict(pending.outcome)
        http_status = outcome.pop("http_status")
        if http_status != 200:
            return openai_error(outcome.get("error") or outcome["status"], http_status)
        answer = schema.Answer(
            request_id=request_id, model=parsed.model, text=pending.text,
            prompt_tokens=outcome.get("prompt_tokens"),
            output_tokens=outcome.get("output_tokens"),
            finish_reason=schema.finish_reason(outcome.get("output_tokens"),
                                               server.max_new_tokens),
            timings=outcome)
        if parsed.stream:
            events = schema.stream_events(kind, answer, parsed.include_usage)
            return Response(events, mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache"})
        return jsonify(schema.response_body(kind, answer))

    @blueprint.post("/completions")
    def completions() -> Response:
        return serve(schema.COMPLETIONS)

    @blueprint.post("/chat/completions")
    def chat_completions() -> Response:
        return serve(schema.CHAT)

    @blueprint.get("/models")
    def models() -> Response:
        return jsonify(schema.models_body(server.models, started_epoch_s))

    @blueprint.get("/models/<path:model>")
    def model(model: str) -> Response:
        listed = schema.models_body(server.models, started_epoch_s)["data"]
        found = [m for m in listed if m["id"] == model]
        if not found:  # a look-up, not a request of the run: not recorded
            raise InputError(f"the model {model[:100]!r} does not exist on this server; "
                             f"served: {', '.join(server.models) or 'none'}", 404)
        return jsonify(found[0])

    return blueprint


def register(app: Flask, server: ExperimentServer, limits: Limits) -> None:
    """Serve the /v1 endpoints from ``app`` (``sincere.serving.app.create_app`` calls this)."""
    app.register_blueprint(create_blueprint(server, limits))
    app.after_request(as_openai_error)
