"""The experiment server's HTTP layer (Flask): one app over one run's ``ExperimentServer``.

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

With a key (``API_KEY``), every call but /health needs it (``sincere.serving.guard``): a call
without it is answered 401 and counted in /metrics, and is not a request of the run.

Its parts: the hooks (``sincere.serving.hooks``: errors, refusals recorded, calls in flight),
SINCERE's endpoints (``sincere.serving.endpoints``), the request checks they share
(``sincere.serving.inputs``), the OpenAI and Prometheus endpoints. Serving it over HTTP is
``sincere.serving.http_server``'s.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from sincere.access import KeyCheck
from sincere.serving import endpoints, guard, hooks, openai_api, prometheus
from sincere.serving.inputs import Limits
from sincere.serving.server import ExperimentServer


def create_app(server: ExperimentServer, limits: Limits | None = None,
               info: dict[str, Any] | None = None, api_key: str = "") -> Flask:
    """The Flask app over one run's ExperimentServer (``limits``: ``Limits()`` unless given);
    ``info`` is added to /health; with ``api_key``, every call but /health needs it."""
    limits = limits or Limits()
    app = Flask("sincere")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    key_check = KeyCheck(api_key) if api_key else None
    if key_check is not None:  # first: a refused call meets no other hook
        guard.require_key(app, key_check)
    in_flight = hooks.InFlight()
    app.extensions["sincere_in_flight"] = in_flight
    # The hooks first: their before and after functions run around every call as registered.
    app.register_blueprint(hooks.create_blueprint(server, in_flight))
    app.register_blueprint(endpoints.inference_blueprint(server, limits))
    app.register_blueprint(endpoints.control_blueprint(server, limits, in_flight,
                                                       dict(info or {})))
    app.register_blueprint(endpoints.models_blueprint(server, limits))
    openai_api.register(app, server, limits)
    prometheus.register(app, server, key_check)
    return app
