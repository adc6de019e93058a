"""The OpenAI request and response objects the experiment server speaks: pure parsing and building.

A request body of ``POST /v1/completions`` or ``POST /v1/chat/completions`` becomes an
``OpenAIRequest`` (or an ``InputError`` naming the field that cannot be honoured); an answered
request becomes OpenAI's response object, or its server-sent events when ``stream`` is true.

What the server does is fixed by the run, not by the request: greedy decoding of exactly the run's
``MAX_NEW_TOKENS`` new tokens, one choice. So the sampling parameters standard load generators
send (temperature, top_p, seed, penalties, ``ignore_eos``, ...) are accepted and have no effect,
while what would change the answer in a way the run cannot honour is refused with a 400: ``n``
or ``best_of`` above 1, ``max_tokens`` above the run's count, ``echo``, ``logprobs``, stop
sequences, tools, a non-text content part, a prompt that is not one string. Fields this module does
not know are ignored, as vLLM does; their names (never their values) are reported to the caller
of ``parse_request`` so that the server can log them once.

Messages name fields, types and numbers only, never the prompt's content.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from sincere.serving.inputs import MODEL_ALIAS, InputError, Limits, type_name

COMPLETIONS = "completions"
CHAT = "chat"

# Parameters that only steer sampling or bookkeeping: accepted (when of the right type) and
# without effect, since the server decodes greedily a fixed number of tokens.
NUMBER_PARAMETERS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty",
                     "frequency_penalty", "repetition_penalty", "length_penalty", "seed")
FLAG_PARAMETERS = ("ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
                   "parallel_tool_calls", "store", "add_generation_prompt")
FREE_PARAMETERS = ("user", "metadata", "service_tier", "priority", "request_id",
                   "reasoning_effort", "continuous_usage_stats")
MESSAGE_ROLES = ("system", "developer", "user", "assistant")
STREAM_OPTIONS = ("include_usage", "continuous_usage_stats")


@dataclass(frozen=True)
class OpenAIRequest:
    """What the server needs of a completion or chat request."""

    kind: str  # COMPLETIONS or CHAT
    model: str
    prompt: str | None = field(default=None, repr=False)  # completions
    messages: tuple[dict[str, str], ...] = field(default=(), repr=False)  # chat, text only
    stream: bool = False
    include_usage: bool = False
    ignored: tuple[str, ...] = ()  # names of fields this module does not know


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _count(body: dict[str, Any], name: str) -> int | None:
    """An optional positive integer field."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {type_name(value)}"
                         + (f" {value}" if _number(value) else ""))
    return value


def _empty(value: Any) -> bool:
    """null, false, 0, "" or an empty list or object: a field asking for nothing."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def _check_common(body: dict[str, Any], max_new_tokens: int) -> tuple[bool, bool]:
    """The fields shared by both endpoints; (stream, include_usage)."""
    for name in ("max_tokens", "max_completion_tokens", "min_tokens"):
        value = _count(body, name)
        if value is not None and value > max_new_tokens:
            raise InputError(f"{name} is {value}, above this run's MAX_NEW_TOKENS "
                             f"({max_new_tokens}): every request is answered with exactly "
                             f"{max_new_tokens} new tokens, so ask for at most that")
    n = _count(body, "n")
    if n is not None and n > 1:
        raise InputError(f"n is {n}: this server returns one choice per request (n = 1)")
    for name in NUMBER_PARAMETERS:
        if body.get(name) is not None and not _number(body[name]):
            raise InputError(f"{name} must be a number, got {type_name(body[name])}")
    for name in FLAG_PARAMETERS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise InputError(f"{name} must be true or false, got {type_name(body[name])}")
    for name in ("stop", "stop_token_ids", "logit_bias", "tools", "functions", "audio",
                 "prediction", "guided_json", "guided_regex", "guided_choice"):
        if not _empty(body.get(name)):
            raise InputError(f"{name} is not supported: the server decodes greedily exactly "
                             "the run's number of new tokens (send null or leave it out)")
    if body.get("tool_choice") not in (None, "none"):
        raise InputError("tool_choice is not supported (no tools): send \"none\" or leave it out")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise InputError("response_format is not supported: only {\"type\": \"text\"}")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InputError("modalities: only [\"text\"] is supported")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InputError(f"stream must be true or false, got {type_name(stream)}")
    options = body.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InputError(f"stream_options must be an object, got {type_name(options)}")
    unknown = sorted(str(k)[:40] for k in options if k not in STREAM_OPTIONS)
    if unknown:
        raise InputError(f"unknown stream_options field(s): {', '.join(unknown)}; allowed: "
                         f"{', '.join(STREAM_OPTIONS)}")
    for name in STREAM_OPTIONS:
        if options.get(name) is not None and not isinstance(options[name], bool):
            raise InputError(f"stream_options.{name} must be true or false")
    return bool(stream), bool(stream and options.get("include_usage"))


def _model(body: dict[str, Any]) -> str:
    if "model" not in body:
        raise InputError("missing field: model (the model's alias, as GET /v1/models lists)")
    model = body["model"]
    if not isinstance(model, str):
        raise InputError(f"model must be a string, got {type_name(model)}")
    if not MODEL_ALIAS.match(model):
        raise InputError("model must be 1 to 100 letters, digits, '.', '_' or '-'")
    return model


def _check_text(text: str, what: str, limits: Limits) -> None:
    if len(text) > limits.max_prompt_chars:
        raise InputError(f"{what} is {len(text)} characters; the limit is "
                         f"{limits.max_prompt_chars}", 413)


def _completion_prompt(body: dict[str, Any], limits: Limits) -> str:
    if "prompt" not in body:
        raise InputError("missing field: prompt (a string)")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # a batch of one prompt is that prompt
    elif not isinstance(prompt, str):
        what = type_name(prompt)
        if isinstance(prompt, list):
            what = f"an array of {len(prompt)}" + (" token ids" if prompt and all(
                isinstance(p, int) for p in prompt) else " items")
        raise InputError(f"prompt must be one string, got {what}: send one prompt per request "
                         "as text")
    if not prompt.strip():
        raise InputError("prompt is empty")
    _check_text(prompt, "prompt", limits)
    for name in ("echo", "logprobs", "suffix"):
        if not _empty(body.get(name)):
            raise InputError(f"{name} is not supported (send null or leave it out)")
    best_of = _count(body, "best_of")
    if best_of is not None and best_of > 1:
        raise InputError(f"best_of is {best_of}: this server returns one greedy choice")
    return prompt


def _message_text(content: Any, index: int) -> str:
    """A message's content as text: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                    part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type_name(part)
                raise InputError(f"messages[{index}].content: only text parts "
                                 f"({{\"type\": \"text\", \"text\": ...}}) are supported, got "
                                 f"{str(kind)[:40]!r}")
            texts.append(part["text"])
        return "\n".join(texts)
    raise InputError(f"messages[{index}].content must be a string or a list of text parts, "
                     f"got {type_name(content)}")


def _chat_messages(body: dict[str, Any], limits: Limits) -> tuple[dict[str, str], ...]:
    if "messages" not in body:
        raise InputError("missing field: messages (a list of {\"role\", \"content\"})")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise InputError(f"messages must be a non-empty array, got {type_name(messages)}")
    normalised = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"messages[{index}] must be an object, got {type_name(message)}")
        role = message.get("role")
        if role not in MESSAGE_ROLES:
            got = repr(role[:40]) if isinstance(role, str) else type_name(role)
            raise InputError(f"messages[{index}].role must be one of "
                             f"{', '.join(MESSAGE_ROLES)}, got {got}")
        if not _empty(message.get("tool_calls")):
            raise InputError(f"messages[{index}].tool_calls is not supported")
        normalised.append({"role": role, "content": _message_text(message.get("content"),
                                                                  index)})
    if not any(m["content"].strip() for m in normalised):
        raise InputError("messages are empty: no message has any text")
    _check_text("".join(m["content"] for m in normalised), "the messages' text", limits)
    if not _empty(body.get("logprobs")) or not _empty(body.get("top_logprobs")):
        raise InputError("logprobs are not supported (send false or leave them out)")
    return tuple(normalised)


def parse_request(kind: str, body: Any, limits: Limits, max_new_tokens: int) -> OpenAIRequest:
    """The request of a ``kind`` (COMPLETIONS or CHAT) body, or InputError saying what is
    wrong or cannot be honoured."""
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, got {type_name(body)}")
    model = _model(body)
    if kind == COMPLETIONS:
        prompt, messages = _completion_prompt(body, limits), ()
    else:
        prompt, messages = None, _chat_messages(body, limits)
    stream, include_usage = _check_common(body, max_new_tokens)
    known = {"model", "prompt", "messages", "max_tokens", "max_completion_tokens", "min_tokens",
             "n", "best_of", "echo", "logprobs", "top_logprobs", "suffix", "stream",
             "stream_options", "stop", "stop_token_ids", "logit_bias", "tools", "functions",
             "tool_choice", "response_format", "modalities", "audio", "prediction",
             "guided_json", "guided_regex", "guided_choice", *NUMBER_PARAMETERS,
             *FLAG_PARAMETERS, *FREE_PARAMETERS}
    ignored = tuple(sorted(str(k)[:40] for k in body if k not in known))
    return OpenAIRequest(kind, model, prompt, messages, stream, include_usage, ignored)


def plain_chat_prompt(messages: tuple[dict[str, str], ...] | list[dict[str, str]]) -> str:
    """The prompt of a chat for a model without a chat template: one ``role: text`` paragraph
    per message, then ``assistant:`` for the model to go on from."""
    return "\n\n".join([*(f"{m['role']}: {m['content']}" for m in messages), "assistant:"])


# --- responses ----------------------------------------------------------------------------------

def usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int]:
    prompt, completion = int(prompt_tokens or 0), int(completion_tokens or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def finish_reason(output_tokens: int | None, max_new_tokens: int) -> str:
    """``length`` when the run's count was generated (the engine holds EOS back until then),
    ``stop`` when the model ended earlier."""
    return "length" if (output_tokens or 0) >= max_new_tokens else "stop"


@dataclass(frozen=True)
class Answer:
    """An answered request, as the response objects need it."""

    request_id: str
    model: str
    text: str = field(repr=False)
    prompt_tokens: int | None
    output_tokens: int | None
    finish_reason: str
    timings: dict[str, Any]  # the server's record of the request (no text)
    created: int = field(default_factory=lambda: int(time.time()))

    def response_id(self, kind: str) -> str:
        return f"{'cmpl' if kind == COMPLETIONS else 'chatcmpl'}-{self.request_id}"


def response_body(kind: str, answer: Answer) -> dict[str, Any]:
    """The ``text_completion`` or ``chat.completion`` object; ``sincere`` holds the server's
    timings of the request (queue wait, swap wait, processing, latency, batch)."""
    if kind == COMPLETIONS:
        choice = {"index": 0, "text": answer.text, "logprobs": None,
                  "finish_reason": answer.finish_reason}
        obj = "text_completion"
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": answer.text},
                  "logprobs": None, "finish_reason": answer.finish_reason}
        obj = "chat.completion"
    return {"id": answer.response_id(kind), "object": obj, "created": answer.created,
            "model": answer.model, "choices": [choice],
            "usage": usage(answer.prompt_tokens, answer.output_tokens),
            "sincere": answer.timings}


def stream_events(kind: str, answer: Answer, include_usage: bool) -> list[str]:
    """The server-sent events of a streamed answer: the whole text in one chunk (it exists only
    once its batch has ended), the usage chunk when asked for, then ``[DONE]``."""
    base = {"id": answer.response_id(kind), "created": answer.created, "model": answer.model}
    if kind == COMPLETIONS:
        chunk = {**base, "object": "text_completion",
                 "choices": [{"index": 0, "text": answer.text, "logprobs": None,
                              "finish_reason": answer.finish_reason}]}
        usage_chunk = {**base, "object": "text_completion", "choices": []}
    else:
        chunk = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"role": "assistant",
                                                    "content": answer.text},
                              "logprobs": None, "finish_reason": answer.finish_reason}]}
        usage_chunk = {**base, "object": "chat.completion.chunk", "choices": []}
    events = [chunk]
    if include_usage:
        events.append({**usage_chunk, "usage": usage(answer.prompt_tokens,
                                                     answer.output_tokens)})
    return [*(sse(event) for event in events), "data: [DONE]\n\n"]


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def models_body(models: list[str], created: int) -> dict[str, Any]:
    """GET /v1/models: the served aliases."""
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created,
                                        "owned_by": "sincere"} for m in models]}


ERROR_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 410: "model_removed",
               413: "request_too_large", 415: "unsupported_media_type", 422: "unprocessable",
               429: "queue_full", 500: "batch_failed", 503: "unavailable"}


def error_body(message: str, http_status: int, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = ("server_error" if http_status >= 500 else "rate_limit_error" if http_status == 429
            else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None,
                      "code": code or ERROR_CODES.get(http_status, str(http_status))}}
