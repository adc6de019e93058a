"""The API key and TLS (issue 23), with real clients: the ``openai`` package with and without the
key, ``requests`` over TLS with a certificate made here, the generator and the runner end to end
over TLS with a key; a wrong key refused and never recorded as a request of the run."""

from __future__ import annotations

import hmac
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import openai
import pandas as pd
import pytest
import requests

import profiling_batch_calls
import profiling_batch_flask
from sincere import access
from sincere.access import KeyCheck, bearer_headers, exposure_error, server_tls
from sincere.grid.children import ROOT, script_argv
from sincere.scheduling.strategies import make_strategy
from sincere.serving.http_server import serving
from sincere.traffic.api_modes import ServerUnavailable
from sincere.traffic.client import wait_for_server
from tests.conftest import SERVER_TEST_NEW_TOKENS as NEW_TOKENS
from tests.server_support import live_server

KEY = "sk-sincere-test-4f0c2a9be71d"
WRONG = "sk-sincere-test-000000000000"
WITH_KEY = bearer_headers(KEY)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost and its key, as one is made inside
    the CVM (docs/server.md)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = access.make_certificate(tmp_path_factory.mktemp("tls"), days=2)
    assert key.stat().st_mode & 0o077 == 0  # the private key is its owner's alone
    return cert, key


def no_key_anywhere(*texts: str, folders: tuple[Path, ...] = ()) -> None:
    """Neither key is in any of ``texts`` nor in any file under ``folders``."""
    found = [str(f) for folder in folders for f in folder.rglob("*") if f.is_file()
             and (KEY.encode() in f.read_bytes() or WRONG.encode() in f.read_bytes())]
    found += [f"text {i}" for i, text in enumerate(texts) if KEY in text or WRONG in text]
    assert not found


# The parts, alone.

@pytest.mark.parametrize(("authorization", "refused"), [
    (None, "needs an API key"),
    ("", "needs an API key"),
    (f"Basic {KEY}", "needs an API key"),
    ("Bearer ", "needs an API key"),
    (KEY, "needs an API key"),  # the key without its scheme
    (f"Bearer {WRONG}", "not this server's"),
    (f"Bearer {KEY}x", "not this server's"),
    (f"Bearer {KEY[:-1]}", "not this server's"),
    (f"Bearer {KEY}", None),
    (f"bearer  {KEY} ", None),  # the scheme is case-insensitive (RFC 6750)
])
def test_a_call_carries_the_whole_key_or_is_refused(authorization: str | None,
                                                     refused: str | None) -> None:
    reason = KeyCheck(KEY).refusal(authorization)
    assert (reason is None) == (refused is None)
    if refused:
        assert refused in reason and KEY not in reason and WRONG not in reason


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", recording)
    check = KeyCheck(KEY)
    assert check.refusal(f"Bearer {KEY}") is None
    assert check.refusal("Bearer x") is not None
    # Digests of the two keys: equal lengths, whatever the key presented.
    assert compared == [(32, 32), (32, 32)]
    assert KEY not in repr(check)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("gpu-vm", False)])
def test_beyond_loopback_a_server_needs_a_key_or_an_explicit_open_door(host: str,
                                                                       loopback: bool) -> None:
    refusal = exposure_error(host, "", False, "api_scheduler_experiments.py")
    assert (refusal is None) == loopback
    if not loopback:
        assert "API_KEY" in refusal and "--allow-no-key true" in refusal
    assert exposure_error(host, KEY, False, "x.py") is None
    assert exposure_error(host, "", True, "x.py") is None


def test_keys_come_from_the_environment_and_are_never_quoted() -> None:
    assert access.server_key({"API_KEY": KEY}) == KEY
    assert access.server_key({"OPENAI_API_KEY": KEY}) == ""  # a server takes API_KEY only
    assert access.client_key({"OPENAI_API_KEY": KEY}) == KEY
    assert access.client_key({"API_KEY": KEY, "OPENAI_API_KEY": WRONG}) == KEY
    with pytest.raises(ValueError, match="visible ASCII") as bad:
        access.server_key({"API_KEY": f"{KEY} \n"})
    assert KEY not in str(bad.value)


def test_tls_needs_a_certificate_and_its_key(certificate: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    cert, key = certificate
    assert server_tls("", "") is None
    assert isinstance(server_tls(cert, key), ssl.SSLContext)
    with pytest.raises(ValueError, match="both TLS_CERT"):
        server_tls(cert, "")
    with pytest.raises(ValueError, match="is not a file"):
        server_tls(tmp_path / "none.pem", key)
    with pytest.raises(ValueError, match="cannot be used together"):
        server_tls(key, key)


# The experiment server, in-process, with a key.

def test_every_call_but_health_needs_the_key(engine, tiny_profile, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with live_server(engine, tiny_profile, make_strategy("Immediate"), NEW_TOKENS, run_dir,
                     api_key=KEY) as (url, server):
        assert requests.get(f"{url}/health", timeout=30).status_code == 200
        refused = [
            requests.post(f"{url}/inference", json={"prompt": "hi " * 60_000,
                                                    "model_alias": "llama3-8b"}, timeout=30),
            requests.post(f"{url}/inference", json={"prompt": "hi", "model_alias": "llama3-8b"},
                          headers=bearer_headers(WRONG), timeout=30),
            requests.post(f"{url}/v1/completions", json={"model": "llama3-8b", "prompt": "hi"},
                          timeout=30),
            requests.post(f"{url}/start", json={}, timeout=30),
            requests.post(f"{url}/stop", json={"issued": 0}, timeout=30),
            requests.delete(f"{url}/models/gemma-7b", timeout=30),
            requests.get(f"{url}/status", timeout=30),
            requests.get(f"{url}/no/such/path", timeout=30),
        ]
        # A big refused body still gets its 401 (the server reads it before closing).
        assert [r.status_code for r in refused] == [401] * len(refused)
        assert all(r.headers["WWW-Authenticate"].startswith("Bearer") for r in refused)
        assert "needs an API key" in refused[0].json()["error"]
        assert refused[1].json()["error"] == "the API key is not this server's"
        assert refused[2].json()["error"]["code"] == "invalid_api_key"  # OpenAI's object
        assert refused[2].json()["error"]["type"] == "invalid_request_error"
        # The refused /stop stopped nothing, the refused DELETE removed nothing.
        assert not server.draining and not server.finished
        assert "gemma-7b" in server.models

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key=WRONG, max_retries=0,
                          timeout=60).completions.create(model="llama3-8b", prompt="hi")
        keyed = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        assert {m.id for m in keyed.models.list()} == set(server.models)
        answer = keyed.completions.create(model="llama3-8b", prompt="Name three rivers.")
        assert answer.usage.completion_tokens == NEW_TOKENS
        ok = requests.post(f"{url}/inference", json={"prompt": "hi", "model_alias": "gemma-7b"},
                           headers=WITH_KEY, timeout=60)
        assert ok.status_code == 200 and ok.json()["status"] == "ok"

        metrics = requests.get(f"{url}/metrics", headers=WITH_KEY, timeout=30).text
        assert "sincere_unauthorized_total 9" in metrics.splitlines()  # 8 above + openai's
        stop = requests.post(f"{url}/stop", json={}, headers=WITH_KEY, timeout=60).json()
    # Only the two calls that carried the key are requests of the run.
    assert stop["accounting"]["received"] == stop["accounting"]["completed"] == 2
    rows = pd.read_csv(run_dir / "requests.csv")
    assert len(rows) == 2 and (rows["status"] == "ok").all()
    no_key_anywhere(folders=(run_dir,))


# Over TLS, with a key: requests, the openai package, the generator.

def test_https_with_a_certificate_made_here(engine, tiny_profile, certificate, tmp_path: Path
                                            ) -> None:
    cert, cert_key = certificate
    run_dir = tmp_path / "run"
    with live_server(engine, tiny_profile, make_strategy("Immediate"), NEW_TOKENS, run_dir,
                     api_key=KEY, tls=server_tls(cert, cert_key)) as (url, _server):
        assert url.startswith("https://127.0.0.1:")
        # A client that connects and never shakes hands holds no one else at the door.
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)):
            health = requests.get(f"{url}/health", verify=str(cert), timeout=30)
        assert health.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # not a certificate it trusts
            requests.get(f"{url}/health", timeout=30)
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP: no answer
            requests.get(f"http://127.0.0.1:{port}/health", timeout=30)
        # The clients' wait says why, and which setting mends it.
        with pytest.raises(ServerUnavailable, match="not trusted here: give its certificate"):
            wait_for_server(url, 60.0)
        with pytest.raises(ServerUnavailable, match="answers only an https:// URL"):
            wait_for_server(f"http://127.0.0.1:{port}", 0.5)
        client = openai.OpenAI(
            base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60,
            http_client=openai.DefaultHttpxClient(
                verify=ssl.create_default_context(cafile=str(cert))))
        answer = client.chat.completions.create(
            model="granite-7b", messages=[{"role": "user", "content": "Hello"}])
        assert answer.usage.completion_tokens == NEW_TOKENS
        stop = requests.post(f"{url}/stop", json={}, headers=WITH_KEY, verify=str(cert),
                             timeout=60).json()
    assert stop["accounting"]["received"] == stop["accounting"]["completed"] == 1


def test_the_generator_over_tls_with_a_key(engine, tiny_profile, certificate,
                                           server_workloads: Path, tmp_path: Path) -> None:
    """api_calls.py against https://127.0.0.1:PORT with the key: every request accounted on
    both sides; a wrong key before and after is refused, counted, and no request of the run."""
    cert, cert_key = certificate
    run_dir = tmp_path / "run"
    with live_server(engine, tiny_profile, make_strategy("Immediate"), NEW_TOKENS, run_dir,
                     api_key=KEY, tls=server_tls(cert, cert_key)) as (url, server):
        def intruder() -> int:
            return requests.post(f"{url}/inference", json={"prompt": "hi",
                                                           "model_alias": "llama3-8b"},
                                 headers=bearer_headers(WRONG), verify=str(cert),
                                 timeout=30).status_code

        assert intruder() == 401
        argv = script_argv("api_calls.py", {
            "URL": url, "CA_FILE": cert, "PATTERN": "constant", "MEAN": 4.0, "DURATION_S": 3.0,
            "SEED": 3, "WORKLOADS_DIR": server_workloads, "MAX_TOKENS": NEW_TOKENS,
            "MODEL_MIX": {"granite-7b": 1, "llama3-8b": 1}, "WAIT_S": 30.0})
        wrong = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "API_KEY": WRONG})
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "API_KEY": KEY})
        assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr
        assert done.returncode == 0, done.stdout + done.stderr
        assert intruder() == 401  # after the run: still refused, and not a late request
        metrics = requests.get(f"{url}/metrics", headers=WITH_KEY, verify=str(cert),
                               timeout=30).text
        assert server.finished
    assert "sincere_unauthorized_total 3" in metrics.splitlines()
    run = json.loads((run_dir / "run.json").read_text())
    client = pd.read_csv(run_dir / "client.csv")
    rows = pd.read_csv(run_dir / "requests.csv")
    assert len(client) == 12 and (client["http_status"] == 200).all()
    assert run["accounting"]["issued"] == run["accounting"]["received"] == len(rows) == 12
    assert sorted(rows["request_id"]) == sorted(client["request_id"])
    assert (rows["status"] == "ok").all()
    no_key_anywhere(done.stdout, done.stderr, wrong.stdout, wrong.stderr, folders=(run_dir,))


# The scripts' doors.

@pytest.mark.parametrize(("script", "flags", "words"), [
    ("api_scheduler_experiments.py", ["--host", "0.0.0.0"], ["API_KEY", "--allow-no-key true"]),
    ("profiling_batch_flask.py", ["--host", "0.0.0.0"], ["API_KEY", "--allow-no-key true"]),
    ("api_scheduler_experiments.py", ["--tls-cert", "cert.pem"], ["both TLS_CERT"]),
    ("run_experiments.py", ["--host", "0.0.0.0"], ["API_KEY", "--allow-no-key true"]),
])
def test_a_server_that_must_not_start_says_why(script: str, flags: list[str], words: list[str],
                                               tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    done = subprocess.run([sys.executable, str(ROOT / script), *flags, "--port", "0"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert all(w in done.stderr for w in words), done.stderr
    assert not (tmp_path / "results").exists()


def test_the_profiling_app_asks_for_the_key_and_its_client_sends_it(
        workloads: Path) -> None:
    class NoEngine:  # a batch never starts: the door is what is tested
        max_new_tokens = 4
        resident = None

        def available_models(self) -> list[str]:
            return ["granite-7b"]

    shut = []
    app = profiling_batch_flask.create_app(NoEngine(), {"p": "a prompt"}, api_key=KEY,
                                           shutdown=lambda: shut.append(1))
    with serving(app) as url:
        assert requests.get(f"{url}/health", timeout=30).status_code == 200
        assert requests.post(f"{url}/shutdown", timeout=30).status_code == 401
        assert not shut
        with pytest.raises(RuntimeError, match="HTTP 401 at batch 1: the API key is not"):
            profiling_batch_calls.post_batch(url, "granite-7b", 1, 4, 0, 30,
                                             headers=bearer_headers(WRONG))
        # With the key the call reaches the app, which refuses the body on its merits.
        with pytest.raises(RuntimeError, match="HTTP 400 at batch 0: batch_size"):
            profiling_batch_calls.post_batch(url, "granite-7b", 0, 4, 0, 30, headers=WITH_KEY)
        assert requests.post(f"{url}/shutdown", headers=WITH_KEY, timeout=30).status_code == 200
    assert shut == [1]


# The runner: its servers over HTTPS, with the key.

def test_the_runner_over_tls_with_a_key(tmp_path: Path, tiny_models, server_workloads,
                                        tiny_profile, certificate) -> None:
    cert, cert_key = certificate
    results = tmp_path / "results"
    argv = script_argv("run_experiments.py", {
        "RESULTS_DIR": results, "MODELS_DIR": tiny_models, "WORKLOADS_DIR": server_workloads,
        "PROFILES": "cpu_noncc", "PROFILES_DIR": Path(tiny_profile.loading_file).parent,
        "STRATEGIES": ["Immediate"], "PATTERNS": ["constant"], "MEANS": [3.0], "SLAS": [5.0],
        "DURATION_S": 2.0, "DRAIN_TIMEOUT_S": 20.0, "MAX_NEW_TOKENS": 4,
        "MONITOR_PERIOD_S": 0.2, "TLS_CERT": cert, "TLS_KEY": cert_key})
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "API_KEY": KEY})
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = results / "immediate__constant__rate3__sla5__rep0"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "complete" and run["accounting_check"]["ok"]
    assert run["accounting"]["issued"] == run["accounting"]["received"] == 6
    assert run["params"]["tls"] is True and run["params"]["api_key_required"] is True
    assert run["identity"]["tls"] is True and "params_mismatch" not in run
    assert "https://127.0.0.1:" in (run_dir / "server.log").read_text()
    no_key_anywhere(done.stdout, done.stderr, folders=(results,))


def test_a_certificate_for_the_names_clients_use(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    assert access.main(["--hosts", "10.0.0.5", "gpu-vm", "--out-dir", str(tmp_path)]) == 0
    names = ssl._ssl._test_decode_cert(str(tmp_path / "cert.pem"))["subjectAltName"]
    assert sorted(names) == [("DNS", "gpu-vm"), ("DNS", "localhost"),
                             ("IP Address", "10.0.0.5"), ("IP Address", "127.0.0.1")]
    assert isinstance(server_tls(tmp_path / "cert.pem", tmp_path / "key.pem"), ssl.SSLContext)


def test_bench_tls_times_both_schemes(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    from benchmarks import bench_tls

    assert bench_tls.main(["--calls", "3", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "http : 3 calls" in out and "https: 3 calls" in out and "TLS adds" in out
