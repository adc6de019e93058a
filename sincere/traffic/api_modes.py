"""How the traffic generator speaks to a server: SINCERE's ``/inference`` or the OpenAI API.

``API`` (api_calls.py) picks one of ``API_MODES``:

- ``sincere``: ``POST /inference {"prompt", "model_alias", "request_id"}``, SINCERE's server only;
- ``openai-completions``: ``POST /v1/completions {"model", "prompt", "max_tokens", ...}``;
- ``openai-chat``: ``POST /v1/chat/completions {"model", "messages": [user prompt],
  "max_completion_tokens", ...}``.

The OpenAI modes drive any OpenAI-compatible server (vLLM, SGLang, TGI, SINCERE's own): the model
is the served name that ``served_models`` maps each alias to (the alias itself by default), each
request carries its id in ``X-Request-Id``, and ``usage.completion_tokens`` gives
``output_tokens``. In every mode the key (``sincere.access.client_key``: ``API_KEY``, else
``OPENAI_API_KEY``) goes in the Authorization header of every call and nowhere else, and an
``https://`` server is trusted by ``ca_file`` (its self-signed certificate, say). Requests are
greedy (temperature 0) and, with ``ignore_eos``, ask for exactly ``max_tokens`` new tokens, as
SINCERE's server generates, so that both kinds of server do the same work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from sincere.access import bearer_headers

API_MODES = ("sincere", "openai-completions", "openai-chat")
PATHS = {"sincere": "/inference", "openai-completions": "/v1/completions",
         "openai-chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class ApiMode:
    """One way of sending a request and reading its answer."""

    name: str = "sincere"
    served_models: dict[str, str] = field(default_factory=dict)  # alias -> served model name
    max_tokens: int = 50  # new tokens asked for (OpenAI modes)
    ignore_eos: bool = True  # OpenAI modes: ask for exactly max_tokens (vLLM, SGLang extension)
    api_key: str = field(default="", repr=False)  # sincere.access.client_key; never written
    ca_file: str = ""  # an https server's certificate (or its CA) to trust ("" = the usual CAs)

    def __post_init__(self) -> None:
        if self.name not in API_MODES:
            raise ValueError(f"API must be one of {', '.join(API_MODES)}, got {self.name!r}")

    @property
    def openai(self) -> bool:
        return self.name != "sincere"

    @property
    def path(self) -> str:
        return PATHS[self.name]

    @property
    def verify(self) -> bool | str:
        """What ``requests`` checks an https server's certificate against."""
        return self.ca_file or True

    def served_name(self, alias: str) -> str:
        return self.served_models.get(alias, alias)

    def body(self, prompt: str, alias: str, request_id: str) -> dict[str, Any]:
        """The JSON body of one request."""
        if not self.openai:
            return {"prompt": prompt, "model_alias": alias, "request_id": request_id}
        body: dict[str, Any] = {"model": self.served_name(alias), "temperature": 0.0,
                                "stream": False}
        if self.name == "openai-completions":
            body.update(prompt=prompt, max_tokens=self.max_tokens)
        else:
            body.update(messages=[{"role": "user", "content": prompt}],
                        max_completion_tokens=self.max_tokens)
        if self.ignore_eos:
            body["ignore_eos"] = True
        return body

    def headers(self, request_id: str | None = None) -> dict[str, str]:
        """A call's headers: the request's id, and the key where there is one."""
        headers = {"X-Request-Id": request_id} if request_id and self.openai else {}
        return headers | bearer_headers(self.api_key)

    def output_tokens(self, answer: dict[str, Any]) -> int | None:
        """New tokens of an answered request, as the server counted them."""
        value = answer.get("output_tokens") if not self.openai else (
            answer.get("usage") or {}).get("completion_tokens")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_message(response: requests.Response) -> str:
    """The error a server answered with: SINCERE's ``{"error": "..."}`` or OpenAI's
    ``{"error": {"message": ...}}``."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} without a JSON body"
    error = body.get("error", "") if isinstance(body, dict) else ""
    if isinstance(error, dict):
        error = error.get("message", "")
    return str(error)


class ServerUnavailable(RuntimeError):
    """The server did not answer in time (or its process exited, it refused the key, or its
    certificate is not trusted)."""


GIVE_UP = (401, 403)  # a wrong or missing key does not get better by waiting


def poll_json(url: str, timeout_s: float, poll_s: float = 0.25,
              headers: dict[str, str] | None = None,
              is_alive: Callable[[], bool] | None = None,
              accept: Callable[[Any], bool] | None = None,
              verify: bool | str = True) -> Any:
    """GET ``url`` until it answers 200 with JSON that ``accept`` takes (any, by default) or
    ``timeout_s`` passes; at least one try, however short the timeout. ``is_alive`` (e.g. a
    subprocess's ``poll() is None``) ends the wait early when it says no; a 401 or 403, or a
    certificate that ``verify`` does not trust, ends it at once. ServerUnavailable says why it
    gave up."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        if is_alive is not None and not is_alive():
            raise ServerUnavailable(f"{url}: the server process exited while starting")
        try:
            response = requests.get(url, headers=headers, verify=verify,
                                    timeout=min(5.0, max(timeout_s, 1.0)))
            if response.status_code == 200:
                answer = response.json()
                if accept is None or accept(answer):
                    return answer
                last = "another server answers on that port"
            else:
                last = f"HTTP {response.status_code}: {error_message(response)[:200]}"
                if response.status_code in GIVE_UP:
                    break
        except requests.exceptions.SSLError as exc:
            raise ServerUnavailable(f"{url}: TLS failed, which waiting will not mend "
                                    f"({tls_failure(exc)})") from None
        except (requests.RequestException, ValueError) as exc:
            last = type(exc).__name__
        if time.monotonic() + poll_s >= deadline:
            break
        time.sleep(poll_s)
    if last == "ConnectionError" and url.startswith("http://"):
        last += "; a server that serves HTTPS answers only an https:// URL"
    raise ServerUnavailable(f"{url} did not answer within {timeout_s:g} s ({last})")


def tls_failure(exc: BaseException) -> str:
    """Why an https call failed, in a line, with the fix for the usual causes."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("the server's certificate is not trusted here: give its certificate, or its "
                "CA's, as CA_FILE" + ("; it does not name the host of the URL"
                                      if "match" in text or "mismatch" in text else ""))
    if "WRONG_VERSION_NUMBER" in text or "record layer" in text:
        return "the server does not speak HTTPS on that port: use an http:// URL"
    return f"{type(exc).__name__}: {text[:200]}"


def list_served_models(url: str, mode: ApiMode, timeout_s: float, poll_s: float = 0.5) -> list[str]:
    """The model names an OpenAI-compatible server lists at ``GET /v1/models``, polling until it
    answers (ServerUnavailable saying why it did not)."""
    answer = poll_json(f"{url}/v1/models", timeout_s, poll_s, headers=mode.headers(),
                       accept=lambda a: isinstance(a, dict), verify=mode.verify)
    data = answer.get("data", [])
    return [str(m.get("id")) for m in data if isinstance(m, dict)] if isinstance(
        data, list) else []


def is_sincere_health(answer: Any) -> bool:
    """Whether a /health answer is an experiment server's (it names its run directory)."""
    return isinstance(answer, dict) and "run_dir" in answer


def sincere_health(url: str, verify: bool | str = True) -> dict[str, Any] | None:
    """SINCERE's ``/health`` answer when ``url`` is an experiment server, else None (one try)."""
    try:
        return poll_json(f"{url}/health", 0.0, accept=is_sincere_health, verify=verify)
    except ServerUnavailable:
        return None
