"""The experiment server's OpenAI endpoints, driven by the official ``openai`` client.

A real server (Flask app, scheduler thread, the engine on the tiny models) answers the client;
what it answers is checked against the engine and against the run's own records.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import openai
import pandas as pd
import pytest
import requests

from sincere.engine.engine import Engine
from sincere.scheduling.strategies import make_strategy
from sincere.serving.app import create_app
from sincere.serving.http_server import serving
from sincere.serving.inputs import Limits
from sincere.serving.openai_schema import plain_chat_prompt
from sincere.serving.run_end import RunEnd
from sincere.serving.server import ExperimentServer
from tests.server_support import HoldToLargest, live_server

MODELS = ["granite-7b", "gemma-7b", "llama3-8b"]
NEW_TOKENS = 3
LIMITS = Limits(max_prompt_chars=2000, max_body_bytes=8192)
PROMPT = "Name three rivers of Europe and say which is longest."


def client(url: str) -> openai.OpenAI:
    """The official client, without retries: every call is one request to the server."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def live(engine, tiny_profile, tmp_path_factory):
    """(url, server) of a server that answers at once (Immediate, NEW_TOKENS new tokens)."""
    with live_server(engine, tiny_profile, make_strategy("Immediate"), NEW_TOKENS,
                     tmp_path_factory.mktemp("openai_run"), LIMITS, models=MODELS) as live:
        yield live


def test_models_lists_the_aliases(live) -> None:
    url, server = live
    before = server.accounting()
    assert sorted(m.id for m in client(url).models.list()) == sorted(MODELS)
    assert client(url).models.retrieve("gemma-7b").id == "gemma-7b"
    with pytest.raises(openai.NotFoundError) as missing:
        client(url).models.retrieve("mistral-7b")
    assert missing.value.body["code"] == "model_not_found"
    assert server.accounting() == before  # look-ups are no requests of the run


def test_a_completion_is_the_engines_answer(live, engine) -> None:
    """Sampling parameters are accepted and change nothing: the answer is the greedy one that
    /inference gives, with the run's number of tokens counted in usage."""
    url, _ = live
    answer = client(url).completions.create(model="llama3-8b", prompt=PROMPT, max_tokens=2,
                                            temperature=0.8, top_p=0.9, seed=7,
                                            extra_body={"ignore_eos": True, "top_k": 5})
    same = requests.post(f"{url}/inference", json={"prompt": PROMPT, "model_alias": "llama3-8b"},
                         timeout=60).json()
    choice = answer.choices[0]
    assert answer.object == "text_completion" and answer.model == "llama3-8b"
    assert choice.text == same["text"] and choice.finish_reason == "length"
    assert answer.usage.completion_tokens == NEW_TOKENS == same["output_tokens"]
    assert answer.usage.prompt_tokens == engine.count_tokens("llama3-8b", PROMPT)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + NEW_TOKENS


def test_a_chat_without_a_template_is_joined_plainly(live, engine) -> None:
    url, _ = live
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}]
    answer = client(url).chat.completions.create(model="gemma-7b", messages=messages,
                                                 max_completion_tokens=NEW_TOKENS)
    flat = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Why is the sky blue?"}]
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage.prompt_tokens == engine.count_tokens("gemma-7b",
                                                             plain_chat_prompt(flat))
    assert answer.usage.completion_tokens == NEW_TOKENS


def test_streaming_sends_the_text_in_one_chunk_then_done(live) -> None:
    url, _ = live
    messages = [{"role": "user", "content": "Count to five."}]
    whole = client(url).chat.completions.create(model="granite-7b", messages=messages)
    chunks = list(client(url).chat.completions.create(
        model="granite-7b", messages=messages, stream=True,
        stream_options={"include_usage": True}))
    assert [len(c.choices) for c in chunks] == [1, 0]  # the text, then the usage
    assert chunks[0].choices[0].delta.content == whole.choices[0].message.content
    assert chunks[0].choices[0].finish_reason == "length"
    assert chunks[1].usage.completion_tokens == NEW_TOKENS
    completion = list(client(url).completions.create(model="granite-7b", prompt=PROMPT,
                                                     stream=True))
    assert len(completion) == 1 and completion[0].usage is None
    raw = requests.post(f"{url}/v1/completions", json={"model": "granite-7b", "prompt": PROMPT,
                                                       "stream": True}, timeout=60)
    assert raw.headers["Content-Type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n") and raw.text.count("data: ") == 2


REFUSED = [
    # (create keyword arguments, HTTP status, openai exception, words of the message)
    ({"model": "mistral-7b", "prompt": "hi"}, 404, openai.NotFoundError,
     "'mistral-7b' does not exist"),
    ({"model": "llama3-8b", "prompt": "hi", "max_tokens": NEW_TOKENS + 1}, 400,
     openai.BadRequestError, f"above this run's MAX_NEW_TOKENS ({NEW_TOKENS})"),
    ({"model": "llama3-8b", "prompt": "hi", "n": 2}, 400, openai.BadRequestError, "n is 2"),
    ({"model": "llama3-8b", "prompt": [[1, 2], [3]]}, 400, openai.BadRequestError,
     "prompt must be one string"),
    ({"model": "llama3-8b", "prompt": "hi", "stop": ["\n"]}, 400, openai.BadRequestError,
     "stop is not supported"),
    ({"model": "llama3-8b", "prompt": "hi", "logprobs": 2}, 400, openai.BadRequestError,
     "logprobs is not supported"),
    ({"model": "llama3-8b", "prompt": "x" * 2001}, 413, openai.APIStatusError,
     "2001 characters; the limit is 2000"),
]


@pytest.mark.parametrize(("kwargs", "status", "error", "words"), REFUSED)
def test_what_cannot_be_honoured_is_refused_and_recorded(live, kwargs, status, error,
                                                         words) -> None:
    url, server = live
    before = server.accounting()["rejected"]
    with pytest.raises(error) as raised:
        client(url).completions.create(**kwargs)
    assert raised.value.status_code == status
    assert words in raised.value.body["message"]
    assert raised.value.body["type"] == "invalid_request_error"
    if status == 404:
        assert raised.value.body["code"] == "model_not_found"
    assert server.accounting()["rejected"] == before + 1


def test_a_streamed_request_refused_or_failed_gets_an_error_not_a_stream(
        live, engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """stream: true changes nothing for an error: a request refused (a model that does not
    exist) or failed (its batch raised) is answered with the HTTP status and OpenAI's error
    object, as JSON, never as an event stream, and recorded as rejected or failed."""
    url, server = live
    before = server.accounting()
    refused = requests.post(f"{url}/v1/completions", json={
        "model": "mistral-7b", "prompt": "hi", "stream": True}, timeout=60)
    assert refused.status_code == 404
    assert refused.headers["Content-Type"].startswith("application/json")
    assert refused.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError, match="'mistral-7b' does not exist"):
        client(url).chat.completions.create(model="mistral-7b", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])

    def failing(batch_prompts: list[str], max_new_tokens: int):
        raise RuntimeError("injected fault")  # where the engine calls the model

    monkeypatch.setattr(engine, "_generate_batch", failing)
    failed = requests.post(f"{url}/v1/completions", json={
        "model": "llama3-8b", "prompt": PROMPT, "stream": True}, timeout=60)
    assert failed.status_code == 500
    assert failed.headers["Content-Type"].startswith("application/json")
    assert failed.json()["error"]["type"] == "server_error"
    assert "RuntimeError" in failed.json()["error"]["message"]
    with pytest.raises(openai.InternalServerError):
        client(url).chat.completions.create(model="llama3-8b", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    after = server.accounting()
    assert (after["rejected"], after["failed"]) == (before["rejected"] + 2,
                                                    before["failed"] + 2)


def test_a_malformed_body_gets_openais_error_object(live) -> None:
    url, server = live
    before = server.accounting()["rejected"]
    for raw in (b"{not json", b'{"model": "llama3-8b", "messages": "hi"}'):
        answer = requests.post(f"{url}/v1/chat/completions", data=raw, timeout=30,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="model must be a string"):
        client(url).post("/chat/completions", body={"model": 7, "messages": []}, cast_to=object)
    assert server.accounting()["rejected"] == before + 3


def test_the_request_id_header_names_the_record_once(live) -> None:
    """X-Request-Id names the request in requests.csv; a reused one gets a server id instead of
    a refusal (a tool's tracing header is not an idempotency key)."""
    url, server = live
    body = {"model": "llama3-8b", "prompt": PROMPT}
    for _ in range(2):
        answer = requests.post(f"{url}/v1/completions", json=body, timeout=60,
                               headers={"X-Request-Id": "tool-req-1"})
        assert answer.status_code == 200
    rows = pd.read_csv(server.run_dir / "requests.csv")
    assert (rows["request_id"] == "tool-req-1").sum() == 1
    assert answer.json()["id"].startswith("cmpl-s")  # the second: a server id


def test_metrics_are_scraped_not_recorded(live) -> None:
    """GET /metrics (AIPerf scrapes it) answers the run's counters and is no request of it."""
    url, server = live
    before = server.accounting()
    for method in ("GET", "HEAD"):
        answer = requests.request(method, f"{url}/metrics", timeout=30)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = requests.get(f"{url}/metrics", timeout=30).text
    assert f'sincere_requests_total{{status="ok"}} {before["completed"]}' in text
    assert 'sincere_queue_length{model="llama3-8b"} 0' in text
    assert server.accounting() == before
    # Nothing in flight: the requests settled by status add up to those received, once each.
    samples = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    settled = sum(int(v) for name, v in samples if name.startswith("sincere_requests_total{"))
    received = [int(v) for name, v in samples if name == "sincere_requests_received_total"]
    assert received == [before["received"]] and settled == before["received"]


def test_metrics_count_a_request_once() -> None:
    """received is a counter of its own: 7 received, 4 ok, 1 rejected, 2 still queued (so not
    settled); sincere_requests_total sums to 5, never to 12."""
    from sincere.serving.prometheus import exposition

    class Counted:
        def status(self) -> dict:
            return {"counts": {"received": 7, "ok": 4, "rejected": 1, "failed": 0,
                               "unserved": 0, "shed": 0},
                    "queues": {"a": 2}, "now_s": 3.5}

    lines = exposition(Counted(), in_flight=2).splitlines()
    assert "sincere_requests_received_total 7" in lines
    by_status = [line for line in lines if line.startswith("sincere_requests_total{")]
    assert sorted(by_status) == ['sincere_requests_total{status="failed"} 0',
                                 'sincere_requests_total{status="ok"} 4',
                                 'sincere_requests_total{status="rejected"} 1',
                                 'sincere_requests_total{status="shed"} 0',
                                 'sincere_requests_total{status="unserved"} 0']
    assert ('sincere_queue_length{model="a"} 2' in lines
            and "sincere_requests_in_flight 2" in lines and "sincere_run_seconds 3.5" in lines)


def test_every_call_is_in_the_records(live) -> None:
    """Runs last in this module: every completion call above, refused or served, is one row of
    requests.csv, and the accounting adds up."""
    url, server = live
    stop = requests.post(f"{url}/stop", json={}, timeout=60).json()
    accounting = stop["accounting"]
    rows = pd.read_csv(server.run_dir / "requests.csv")
    assert len(rows) == accounting["received"] == accounting["completed"] + accounting[
        "rejected"] + accounting["failed"]
    assert accounting["completed"] >= 8 and accounting["rejected"] >= len(REFUSED) + 3
    assert "mistral-7b" in set(rows["model"])


def test_a_chat_template_renders_the_messages(tiny_models: Path, tmp_path: Path) -> None:
    """A model whose tokenizer has a chat template gets the chat as the template writes it,
    with the assistant's turn opened and the BOS token written once."""
    folder = tmp_path / "llama-chat"
    shutil.copytree(tiny_models / "llama3-8b", folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>"
                               "{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    config_path.write_text(json.dumps(config))
    engine = Engine(tiny_models, host_cache=False)
    engine.add_model_path("llama-chat", folder)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = engine.chat_template_prompt("llama-chat", messages)
    assert text == "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>"
    tokenizer = engine.residency.tokenizer_of("llama-chat")
    ids = tokenizer(text)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert engine.chat_template_prompt("llama3-8b", messages) is None  # no template


class IdleClock:
    """The idle watcher's clock: it moves only when a test says so."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


IDLE_STOP_S = 5.0


def run_without_start(engine, tiny_profile, run_dir: Path, strategy, during) -> dict:
    """A server that no /start begins; ``during(url, run_end, clock)`` sends requests and ends
    the run (IDLE_STOP_S on ``clock``, which stands still unless moved)."""
    server = ExperimentServer(engine, tiny_profile, strategy, 30.0, NEW_TOKENS, run_dir, MODELS,
                              drain_timeout_s=30.0).start()
    app = create_app(server, LIMITS)
    clock = IdleClock()
    run_end = RunEnd(server, app, idle_stop_s=IDLE_STOP_S, poll_s=0.02, clock=clock).start()
    try:
        with serving(app) as url:
            during(url, run_end, clock)
            assert server.wait_finished(60)
    finally:
        server.abort()
        server.wait_finished(30)
        server.close()
        engine.unload()
    return server.run_json


def test_an_idle_run_without_start_ends_and_is_written(engine, tiny_profile,
                                                      tmp_path: Path) -> None:
    def two_requests_then_idle(url: str, run_end: RunEnd, clock: IdleClock) -> None:
        for model in ("granite-7b", "llama3-8b"):
            client(url).completions.create(model=model, prompt=PROMPT)
        while not run_end.server.wait_finished(0.05):  # nothing more comes: time passes
            clock.now_s += IDLE_STOP_S / 2

    run = run_without_start(engine, tiny_profile, tmp_path / "run", make_strategy("Immediate"),
                            two_requests_then_idle)
    assert run["status"] == "complete"
    assert run["accounting"]["received"] == run["accounting"]["completed"] == 2


def test_a_signal_drains_a_run_without_start(engine, tiny_profile, tmp_path: Path) -> None:
    """Ctrl-C / SIGTERM: the queued requests are served (drain), later ones refused, and every
    one of them is in the records."""
    answers: list[int] = []

    def queue_then_signal(url: str, run_end: RunEnd, _clock: IdleClock) -> None:
        def ask() -> None:
            try:
                client(url).completions.create(model="llama3-8b", prompt=PROMPT)
                answers.append(200)
            except openai.APIStatusError as exc:
                answers.append(exc.status_code)

        waiting = [threading.Thread(target=ask) for _ in range(3)]
        for thread in waiting:
            thread.start()
        while run_end.server.status()["queues"]["llama3-8b"] < 3:
            threading.Event().wait(0.01)
        run_end.on_signal()
        while not run_end.server.draining:
            threading.Event().wait(0.01)
        ask()  # after the signal: refused, and recorded
        for thread in waiting:
            thread.join(60)

    run = run_without_start(engine, tiny_profile, tmp_path / "run", HoldToLargest(),
                            queue_then_signal)
    assert run["status"] == "complete"
    assert sorted(answers) == [200, 200, 200, 503]
    assert run["accounting"]["completed"] == 3 and run["accounting"]["rejected"] == 1
    rows = pd.read_csv(tmp_path / "run" / "requests.csv")
    assert sorted(rows["status"]) == ["ok", "ok", "ok", "rejected"]


def test_a_signal_aborts_a_run_the_generator_started(engine, tiny_profile,
                                                    tmp_path: Path) -> None:
    """After /start the generator's /stop ends the run: a signal aborts it (queued requests
    unserved) and idleness does not end it."""
    answers: list[int] = []

    def start_queue_then_signal(url: str, run_end: RunEnd, clock: IdleClock) -> None:
        requests.post(f"{url}/start", json={"params": {"pattern": "test"}}, timeout=30)
        for _ in range(10):  # idle, but this run ends only by /stop (or a signal)
            clock.now_s += IDLE_STOP_S
            assert not run_end.server.wait_finished(0.05)  # the watcher looks every 0.02 s

        def ask() -> None:
            try:
                client(url).completions.create(model="gemma-7b", prompt=PROMPT)
            except openai.APIStatusError as exc:
                answers.append(exc.status_code)

        waiting = threading.Thread(target=ask)
        waiting.start()
        while run_end.server.status()["queues"]["gemma-7b"] < 1:
            threading.Event().wait(0.01)
        run_end.on_signal()
        waiting.join(60)

    run = run_without_start(engine, tiny_profile, tmp_path / "run", HoldToLargest(),
                            start_queue_then_signal)
    assert run["status"] == "interrupted"
    assert answers == [503] and run["accounting"]["unserved"] == 1
