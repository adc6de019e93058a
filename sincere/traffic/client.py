"""The open-loop traffic generator's engine: send a schedule to the server, record client.csv.

Each request leaves at its scheduled time whatever happened to the earlier ones (open loop): a
dispatcher sleeps until each time and hands the request to a pool of threads large enough for
every request in flight. A request's row records when it was scheduled, sent and answered,
the HTTP status, the new tokens the server reports and, for a failure, a short error (the
server's message, ``timeout`` or ``connection: ...``). The request goes as the ``ApiMode`` says
(SINCERE's /inference or the OpenAI API, ``sincere.traffic.api_modes``). The generated text is read
off the wire and dropped; no prompt or text is written anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sincere.files import CsvWriter
from sincere.schemas import CLIENT_COLUMNS
from sincere.traffic.api_modes import (
    ApiMode,
    ServerUnavailable,
    error_message,
    list_served_models,
    poll_json,
    sincere_health,
)
from sincere.traffic.schedule import Schedule

log = logging.getLogger("sincere.traffic")

CONNECT_TIMEOUT_S = 10.0
ERROR_CHARS = 200  # client.csv keeps at most this much of an error message


def wait_for_server(url: str, timeout_s: float, poll_s: float = 0.25,
                    is_alive: Callable[[], bool] | None = None,
                    accept: Callable[[dict[str, Any]], bool] | None = None,
                    verify: bool | str = True) -> dict[str, Any]:
    """Poll ``url``/health until it answers 200 (its JSON) or ``timeout_s`` passes
    (``api_modes.poll_json``); ``accept`` refuses an answer that is not from the server waited
    for; ``verify``: what an https server's certificate is checked against."""
    return poll_json(f"{url}/health", timeout_s, poll_s, is_alive=is_alive,
                     accept=lambda a: isinstance(a, dict) and (accept is None or accept(a)),
                     verify=verify)


def find_server(url: str, api: ApiMode, timeout_s: float
                ) -> tuple[dict[str, Any] | None, list[str]]:
    """Wait for the server at ``url``: (SINCERE's /health answer, or None for another server;
    the models it serves). The OpenAI modes ask GET /v1/models, which any such server has."""
    if not api.openai:
        health = wait_for_server(url, timeout_s, verify=api.verify)
        return health, [str(m) for m in health.get("models", [])]
    return sincere_health(url, api.verify), list_served_models(url, api, timeout_s)


@dataclass
class SendResult:
    """What the generator did: rows by request, and how late the dispatcher ran (handing
    requests to the sender threads; ``sent_s - scheduled_s`` in the rows is the full delay)."""

    rows: list[dict[str, Any]]
    max_send_lateness_s: float
    stop_answer: dict[str, Any] | None


class _Sender:
    """Posts one request per call, each thread with its own HTTP session (with the key and the
    CA file of the ``ApiMode``)."""

    def __init__(self, url: str, timeout_s: float, api: ApiMode) -> None:
        self.url = f"{url}{api.path}"
        self.api = api
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def post(self, prompt: str, model: str, request_id: str
             ) -> tuple[int | None, str, int | None]:
        """(HTTP status or None, error text or "", new tokens or None) for one request."""
        try:
            response = self._session().post(self.url, json=self.api.body(prompt, model,
                                                                         request_id),
                                            headers=self.api.headers(request_id),
                                            timeout=self.timeout,
                                            # per call: a session's verify loses to
                                            # REQUESTS_CA_BUNDLE in the environment
                                            verify=self.api.verify)
        except requests.Timeout:
            return None, "timeout", None
        except requests.ConnectionError as exc:
            return None, f"connection: {type(exc).__name__}", None
        except requests.RequestException as exc:
            return None, f"request: {type(exc).__name__}", None
        if response.status_code != 200:
            return response.status_code, error_message(response)[:ERROR_CHARS], None
        try:
            answer = response.json()
        except ValueError:
            return 200, "the answer is not JSON", None
        return 200, "", self.api.output_tokens(answer) if isinstance(answer, dict) else None


def send_schedule(url: str, schedule: Schedule, prompts: Mapping[str, str], *,
                  client_csv: Path | None, timeout_s: float = 1800.0,
                  max_in_flight: int = 4096, start_params: dict[str, Any] | None = None,
                  stop: bool = True, stop_params: dict[str, Any] | None = None,
                  stop_timeout_s: float = 3600.0, api: ApiMode | None = None,
                  control: bool = True) -> SendResult:
    """Send every request of ``schedule`` open-loop; rows go to ``client_csv`` as they come.

    With ``control`` (SINCERE's server), ``POST /start`` starts the server's run clock before
    the first request (with ``start_params`` for its run.json), and after the last has been
    sent ``POST /stop`` (when ``stop``) tells it how many were issued and waits for the drain;
    another server gets only the requests. ``api`` says how they are sent (default SINCERE's
    /inference). Returns once every request has been answered or has timed out.
    """
    url = url.rstrip("/")
    ids = schedule.request_ids()
    times_s = schedule.scheduled_s.tolist()
    if any(not schedule.prompt_ids[i] or schedule.prompt_ids[i] not in prompts
           for i in range(len(schedule))):
        raise ValueError("every scheduled request needs a prompt id from the workloads folder")
    api = api or ApiMode()
    sender = _Sender(url, timeout_s, api)
    if control:
        begun = requests.post(f"{url}/start", json={"params": start_params or {}},
                              headers=api.headers(), verify=api.verify,
                              timeout=CONNECT_TIMEOUT_S)
        if begun.status_code != 200:  # a wrong key, a run already over: nothing is sent
            raise ServerUnavailable(f"{url}/start answered HTTP {begun.status_code}: "
                                    f"{error_message(begun)[:200]}")
    log_file = CsvWriter(client_csv, CLIENT_COLUMNS) if client_csv is not None else None
    rows: list[dict[str, Any]] = []
    rows_lock = threading.Lock()
    lateness_s = 0.0
    origin = time.monotonic()

    sent = {"count": 0}
    all_sent = threading.Event()
    if not times_s:
        all_sent.set()

    def send(i: int) -> None:
        sent_s = time.monotonic() - origin
        with rows_lock:
            sent["count"] += 1
            if sent["count"] == len(times_s):
                all_sent.set()
        http_status, error, output_tokens = sender.post(prompts[schedule.prompt_ids[i]],
                                                        schedule.models[i], ids[i])
        received_s = time.monotonic() - origin
        row = {"request_id": ids[i], "model": schedule.models[i], "scheduled_s": times_s[i],
               "sent_s": sent_s, "received_s": received_s,
               "client_latency_s": received_s - sent_s, "http_status": http_status,
               "error": error, "output_tokens": output_tokens}
        with rows_lock:
            rows.append(row)
            if log_file is not None and not log_file.closed:
                log_file.write(row)

    pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="send")
    stop_answer = None
    try:
        for i, due_s in enumerate(times_s):
            wait_s = origin + due_s - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
            else:
                lateness_s = max(lateness_s, -wait_s)
            pool.submit(send, i)
        if control and stop:
            # The traffic window is [0, duration): the stop goes at its end, as in the simulator,
            # and never before every request has left (with all threads waiting for answers, a
            # request waits for a free thread: it is then late, and sent_s says by how much).
            duration_s = schedule.params.get("duration_s")
            if duration_s is not None:
                time.sleep(max(0.0, origin + duration_s - time.monotonic()))
            all_sent.wait()
            answer = requests.post(f"{url}/stop", json={
                "issued": len(schedule), "params": stop_params or {}, "wait": True},
                headers=api.headers(), verify=api.verify,
                timeout=(CONNECT_TIMEOUT_S, stop_timeout_s))
            stop_answer = answer.json() if answer.headers.get(
                "Content-Type", "").startswith("application/json") else None
    except BaseException:  # Ctrl-C or a failed /stop: do not wait for answers that may not come
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        if log_file is not None:
            with rows_lock:
                log_file.close()
    rows.sort(key=lambda r: r["request_id"])
    return SendResult(rows, lateness_s, stop_answer)
