"""What a request may carry, and its reading and checking: the input errors of both Flask apps.

``InputError`` is input a server refuses, with its HTTP status (400 unless said otherwise) and a
message that names fields, types and lengths, never the prompt's content. The experiment server's
app (``sincere.serving.app``), its OpenAI endpoints and schema (``openai_api``,
``openai_schema``) and the profiling app (``profiling_batch_flask.py``) raise it; each app
answers it as its error format says. This module imports no web framework: a request object is
passed in where its body is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

INFERENCE_FIELDS = ("prompt", "model_alias")
OPTIONAL_INFERENCE_FIELDS = ("request_id",)
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MODEL_ALIAS = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


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


def type_name(value: Any) -> str:
    """What a JSON value is, in words ("an object", "a string", ...), for error messages."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                        type(value).__name__)


def read_body(request: Any, limit_bytes: int) -> bytes:
    """The body of ``request`` (a werkzeug request), or a 413 when it is larger than
    ``limit_bytes`` (also for a chunked body, which has no Content-Length to check first).
    Not werkzeug's MAX_CONTENT_LENGTH: it would cut a chunked body at the limit without a word,
    and the truncated JSON would look malformed."""
    if request.content_length is not None and request.content_length > limit_bytes:
        raise InputError(f"the body is larger than {limit_bytes} bytes", 413)
    data = request.stream.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise InputError(f"the body is larger than {limit_bytes} bytes", 413)
    return data


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


def control_body(request: Any, limit_bytes: int) -> dict[str, Any]:
    """The JSON object of a control call (an empty body means {})."""
    raw = read_body(request, limit_bytes)
    if not raw.strip():
        return {}
    body = parse_json_body(raw, request.content_type)
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, got {type_name(body)}")
    return body


def parse_inference(body: Any, limits: Limits) -> tuple[str, str, str | None]:
    """``(prompt, model_alias, request_id or None)`` from a /inference body, or InputError."""
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, got {type_name(body)}")
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
        raise InputError(f"prompt must be a string, got {type_name(prompt)}")
    if not isinstance(model, str):
        raise InputError(f"model_alias must be a string, got {type_name(model)}")
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


def plain_field(body: Any, key: str, pattern: re.Pattern[str]) -> str | None:
    """A refused body's ``key`` when it is a well-formed string (to record the request under
    the model and id the caller gave), else None."""
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) and pattern.match(value) else None
