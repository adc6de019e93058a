"""SINCERE's own endpoints of the experiment app, as Flask blueprints over one run's server.

    POST   /inference      {"prompt", "model_alias"[, "request_id"]} -> the request's outcome
    POST   /start          {"params": {...}} (optional): the run's clock starts now
    POST   /stop           {"issued": N, "params": {...}, "wait": true}: drain, write, totals
    GET    /health, /status
    GET    /models; POST /models {"alias"[, "path"]}; DELETE /models/<alias>

Bad input raises ``InputError`` (``sincere.serving.inputs``), which the app's hooks
(``sincere.serving.hooks``) answer and, for /inference, record. The app is put together in
``sincere.serving.app``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Blueprint, g, jsonify, request

from sincere.profiles.profile_set import ProfileError
from sincere.serving.hooks import InFlight, submit_and_wait
from sincere.serving.inputs import (
    MODEL_ALIAS,
    REQUEST_ID,
    InputError,
    Limits,
    control_body,
    parse_inference,
    parse_json_body,
    plain_field,
    read_body,
)
from sincere.serving.server import ExperimentServer

log = logging.getLogger("sincere.serving")


def inference_blueprint(server: ExperimentServer, limits: Limits) -> Blueprint:
    """POST /inference: one request of the run, answered when its batch is done."""
    blueprint = Blueprint("inference", __name__)

    @blueprint.post("/inference")
    def inference():
        body = parse_json_body(read_body(request, limits.max_body_bytes), request.content_type)
        g.model = plain_field(body, "model_alias", MODEL_ALIAS) or ""
        g.request_id = plain_field(body, "request_id", REQUEST_ID)
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

    return blueprint


def control_blueprint(server: ExperimentServer, limits: Limits, in_flight: InFlight,
                      info: dict[str, Any]) -> Blueprint:
    """The run's control: /start, /stop, /health, /status."""
    blueprint = Blueprint("control", __name__)

    @blueprint.post("/start")
    def start():
        body = control_body(request, limits.max_body_bytes)
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise InputError("params must be an object")
        begun = server.begin(params)
        return jsonify(begun=begun, now_s=round(server.now(), 6),
                       started_epoch_s=server.started_epoch_s)

    @blueprint.post("/stop")
    def stop():
        body = control_body(request, limits.max_body_bytes)
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

    @blueprint.get("/health")
    def health():
        return jsonify(status="ok", pid=os.getpid(), models=server.models,
                       resident=server.engine.resident, strategy=server.strategy.name,
                       sla_s=server.sla_s, draining=server.draining, finished=server.finished,
                       run_dir=str(server.run_dir), **info)

    @blueprint.get("/status")
    def status():
        return jsonify(**server.status(), in_flight=in_flight.count)

    return blueprint


def models_blueprint(server: ExperimentServer, limits: Limits) -> Blueprint:
    """Model administration: list, add and remove the served models."""
    blueprint = Blueprint("models", __name__)

    @blueprint.get("/models")
    def list_models():
        view = []
        for model in server.models:
            profile = server.profiles[model]
            view.append({"alias": model, "resident": server.engine.resident == model,
                         "best_batch": profile.best_batch(server.max_new_tokens),
                         "largest_batch": profile.largest_batch(server.max_new_tokens),
                         "load_s": round(server.profiles.load_s(model), 4)})
        return jsonify(models=view, removed=server.removed_models)

    @blueprint.post("/models")
    def add_model():
        body = control_body(request, limits.max_body_bytes)
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

    @blueprint.delete("/models/<alias>")
    def remove_model(alias: str):
        try:
            failed = server.remove_model(alias)
        except KeyError:
            raise InputError(f"model {alias[:100]!r} is not served; served: "
                             f"{', '.join(server.models) or 'none'}", 404) from None
        return jsonify(removed=alias, queued_requests_failed=failed, models=server.models)

    return blueprint
