"""The API key at the door of a Flask app (the experiment server's and the profiling app's).

``require_key`` registers, before every other hook, a check that every call but ``/health``
carries the key (``sincere.access.KeyCheck``). A call without it, or with another key, is
answered 401 with ``{"error": ...}`` and a ``WWW-Authenticate`` header (the experiment app
rewrites the body as OpenAI's error object under /v1/), is counted (``KeyCheck.refused``, which
the experiment server's /metrics reports) and goes no further: it is not a request of the run,
is never recorded in requests.csv, and changes no run state (a refused ``/stop`` stops nothing).
The log says once per client address that calls were refused; never a key.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request

from sincere.access import KeyCheck

log = logging.getLogger("sincere.serving")

DRAIN_BYTES = 1 << 20  # a refused body is read up to this much, so that closing does not reset


def require_key(app: Flask, check: KeyCheck) -> None:
    """Make every call of ``app`` but /health need the key of ``check``. Call it before any
    other hook is registered: the refusal must come first."""
    app.extensions["sincere_key_check"] = check

    def guard() -> Response | None:
        if check.is_open(request.path):
            return None
        reason = check.refusal(request.headers.get("Authorization"))
        if reason is None:
            return None
        client = request.remote_addr or "?"
        if check.count_refusal(client):
            log.warning("refused %s %s from %s: %s (further refusals of this client are only "
                        "counted)", request.method, request.path[:80], client,
                        reason.split(":")[0])
        # Read what the client sent: closing a socket with unread data resets the connection,
        # and the client would see the reset instead of this answer.
        request.stream.read(DRAIN_BYTES)
        response = jsonify(error=reason)
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="sincere"'
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, guard)
