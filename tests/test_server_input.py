"""Bad input gets the right 4xx and a JSON error, is recorded as rejected, and breaks nothing.

A real server (Flask app, scheduler thread, engine on the tiny models) serves the whole module;
the last test checks that after everything thrown at it, it still serves and its records add up.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.scheduling.strategies import make_strategy
from sincere.serving.app import create_app
from sincere.serving.http_server import serving
from sincere.serving.inputs import InputError, Limits, parse_inference
from sincere.serving.server import ExperimentServer
from tests.server_support import HoldToLargest, live_server

LIMITS = Limits(max_prompt_chars=2000, max_body_bytes=8192)
MODELS = ["granite-7b", "gemma-7b", "llama3-8b"]


@pytest.fixture(scope="module")
def live(engine, tiny_profile, tmp_path_factory):
    """(url, server) of a running server that answers at once (Immediate, 2 new tokens)."""
    with live_server(engine, tiny_profile, make_strategy("Immediate"), 2,
                     tmp_path_factory.mktemp("input_run"), LIMITS, models=MODELS) as live:
        yield live


def post(url: str, data: bytes | str, content_type: str | None = "application/json",
         method: str = "POST", path: str = "/inference") -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.request(method, f"{url}{path}", data=data, headers=headers, timeout=30)


BAD_INPUTS = [
    # (body, content type, HTTP status, words the error must contain)
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"", "application/json", 400, "empty"),
    (b"\xff\xfe{}", "application/json", 400, "UTF-8"),
    (b'["prompt", "model_alias"]', "application/json", 400, "must be a JSON object"),
    (b'{"prompt": "hi"}', "application/json", 400, "missing field(s): model_alias"),
    (b'{"model_alias": "llama3-8b"}', "application/json", 400, "missing field(s): prompt"),
    (b'{"prompt": "hi", "model_alias": "llama3-8b", "temperature": 0.7}', "application/json",
     400, "unknown field(s): temperature"),
    (b'{"prompt": 42, "model_alias": "llama3-8b"}', "application/json", 400,
     "prompt must be a string, got a number"),
    (b'{"prompt": "hi", "model_alias": ["llama3-8b"]}', "application/json", 400,
     "model_alias must be a string, got an array"),
    (b'{"prompt": "   ", "model_alias": "llama3-8b"}', "application/json", 400,
     "prompt is empty"),
    (json.dumps({"prompt": "x" * 2001, "model_alias": "llama3-8b"}).encode(),
     "application/json", 413, "2001 characters; the limit is 2000"),
    (b'{"prompt": "hi", "model_alias": "mistral-7b"}', "application/json", 404,
     "unknown model_alias 'mistral-7b'"),
    (b'{"prompt": "hi", "model_alias": "llama3-8b", "request_id": "a b"}', "application/json",
     400, "request_id must be"),
    (b'{"prompt": "hi", "model_alias": "llama3-8b"}', "text/plain", 415,
     "Content-Type must be application/json"),
    (json.dumps({"prompt": "y" * 9000, "model_alias": "llama3-8b"}).encode(),
     "application/json", 413, "larger than 8192 bytes"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "words"), BAD_INPUTS)
def test_bad_input_is_refused_with_a_clear_error(live, body, content_type, status,
                                                 words) -> None:
    url, server = live
    before = server.accounting()["rejected"]
    answer = post(url, body, content_type)
    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json"
    assert words in answer.json()["error"]
    assert server.accounting()["rejected"] == before + 1


def test_a_chunked_body_over_the_limit_is_413_not_cut_short(live) -> None:
    """A chunked body has no Content-Length to check first; it must not be truncated at the
    limit and then reported as malformed JSON."""
    url, server = live
    body = json.dumps({"prompt": "z" * 20000, "model_alias": "llama3-8b"}).encode()
    chunks = (body[i:i + 1000] for i in range(0, len(body), 1000))  # requests sends it chunked
    before = server.accounting()["rejected"]
    answer = requests.post(f"{url}/inference", data=chunks,
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and "larger than 8192 bytes" in answer.json()["error"]
    assert server.accounting()["rejected"] == before + 1


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/inference", 405), ("PUT", "/inference", 405), ("POST", "/infer", 404),
    ("GET", "/", 404), ("DELETE", "/health", 405),
])
def test_wrong_method_or_path(live, method: str, path: str, status: int) -> None:
    url, server = live
    before = server.accounting()["rejected"]
    answer = post(url, b"{}", method=method, path=path)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert (method in error) if status == 405 else ("no such endpoint" in error)
    assert server.accounting()["rejected"] == before + 1


def test_a_reused_request_id_is_refused(live) -> None:
    url, _ = live
    body = json.dumps({"prompt": "Count to three.", "model_alias": "llama3-8b",
                       "request_id": "dup-1"})
    assert post(url, body).status_code == 200
    again = post(url, body)
    assert again.status_code == 409 and "already used" in again.json()["error"]


def test_errors_never_echo_the_prompt(live) -> None:
    url, _ = live
    secret = "SECRET-MARKER-7f3a"
    for body in (f'{{"prompt": "{secret}", "model_alias": 7}}',
                 f'{{"prompt": "{secret}", "model_alias": "nope", "x": 1}}',
                 f'{{"prompt": "{secret}" "model_alias": "llama3-8b"}}'):
        assert secret not in post(url, body).text


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["prompt", "model_alias", "request_id",
                                                       "extra"]) | st.text(max_size=8),
                                      inner, max_size=4),
                    max_leaves=12))
def test_parse_inference_accepts_or_refuses_cleanly(body) -> None:
    """Any JSON value: a valid (prompt, model, id) or an InputError with a 4xx, nothing else."""
    try:
        prompt, model, request_id = parse_inference(body, LIMITS)
    except InputError as refused:
        assert 400 <= refused.http_status < 500 and refused.message
    else:
        assert isinstance(body, dict) and set(body) <= {"prompt", "model_alias", "request_id"}
        assert prompt == body["prompt"] and prompt.strip() and model == body["model_alias"]
        assert request_id == body.get("request_id")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bodies_get_an_answer(live, raw: bytes) -> None:
    url, _ = live
    answer = post(url, raw)
    assert answer.status_code in (200, 400, 404, 409, 413, 415)
    assert "error" in answer.json() or answer.json()["status"] == "ok"


def test_queue_limit_answers_429_with_retry_after(engine, tiny_profile, tmp_path: Path) -> None:
    """Requests are held for a full batch; past MAX_QUEUE they are refused, 429."""
    server = ExperimentServer(engine, tiny_profile, HoldToLargest(), 30.0, 2,
                              tmp_path / "run", MODELS, drain_timeout_s=30.0,
                              max_queue=2).start()
    body = json.dumps({"prompt": "Name a colour.", "model_alias": "llama3-8b"})
    answers: list[requests.Response] = []
    try:
        with serving(create_app(server, LIMITS)) as url:
            waiting = [threading.Thread(target=lambda: answers.append(post(url, body)))
                       for _ in range(2)]
            for thread in waiting:
                thread.start()
            while server.status()["queues"]["llama3-8b"] < 2:
                threading.Event().wait(0.01)
            refused = post(url, body)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert "queue full" in refused.json()["error"]
            requests.post(f"{url}/stop", json={}, timeout=60)
            for thread in waiting:
                thread.join(30)
    finally:
        server.abort()
        server.wait_finished(30)
        server.close()
        engine.unload()
    assert [a.status_code for a in answers] == [200, 200]  # the drain served them
    rows = pd.read_csv(tmp_path / "run" / "requests.csv")
    assert sorted(rows["status"]) == ["ok", "ok", "rejected"]


def test_still_serving_and_every_request_recorded(live, tiny_models: Path) -> None:
    """Runs last in this module: after all the above, a valid request is served as an engine
    of its own answers it (greedy, 2 new tokens: the same text), and the records hold one row
    per request received, each with a status."""
    from sincere.engine.engine import Engine

    url, server = live
    answer = post(url, json.dumps({"prompt": "Say yes.", "model_alias": "gemma-7b"}))
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    alone = Engine(tiny_models, max_new_tokens=2)
    alone.load("gemma-7b")
    assert answer.json()["text"] == alone.generate(["Say yes."]).texts[0]
    alone.unload()
    stop = requests.post(f"{url}/stop", json={}, timeout=60).json()
    accounting = stop["accounting"]
    rows = pd.read_csv(server.run_dir / "requests.csv")
    assert len(rows) == accounting["received"]
    assert accounting["received"] == sum(accounting[k] for k in (
        "completed", "rejected", "failed", "unserved"))
    assert set(rows["status"]) <= {"ok", "rejected"}
