"""The traffic generator speaking the OpenAI API, against the experiment server's own /v1 endpoints.

Both OpenAI modes go through a real run (HTTP, scheduler thread, tiny models) and must account
for every request on both sides; a client-side run (the server treated as any OpenAI server) is
summarised from client.csv and checked against what the server recorded; and the external grid of
run_experiments.py runs as a user runs it, against a server it did not start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests

from sincere.assets.workloads import read_workloads
from sincere.files import write_json_atomic
from sincere.grid.children import ROOT
from sincere.results.summary import summarise_run
from sincere.runs.accounting import check_server_run
from sincere.runs.client_side import client_run_json
from sincere.runs.rundirs import REQUIRED_CLIENT_COLUMNS, read_client
from sincere.scheduling.strategies import make_strategy
from sincere.traffic.api_modes import ApiMode
from sincere.traffic.client import send_schedule
from tests.conftest import SERVER_TEST_NEW_TOKENS as MAX_NEW_TOKENS
from tests.server_support import live_server, run_in_process, schedule_for
from tests.test_server_e2e import assert_accounted

SECRET_KEY = "sk-test-KEY-7e1d"


@pytest.mark.parametrize("api", ["openai-completions", "openai-chat"])
def test_the_generator_drives_the_servers_openai_endpoint(api: str, engine, tiny_profile,
                                                          server_workloads: Path,
                                                          tmp_path: Path) -> None:
    schedule = schedule_for(server_workloads, mean_rps=6.0, duration_s=3.0, seed=5)
    out = run_in_process(engine, tiny_profile, server_workloads, tmp_path / "run",
                         "BestBatch+Timer", schedule, sla_s=8.0, max_new_tokens=MAX_NEW_TOKENS,
                         api=ApiMode(api, max_tokens=MAX_NEW_TOKENS))
    assert_accounted(out, len(schedule))
    assert check_server_run(out.run_dir)["ok"]
    assert (out.requests["status"] == "ok").all()
    assert all(row["http_status"] == 200 for row in out.client)
    # output_tokens in client.csv is the server's usage count of the very same request.
    server_tokens = dict(zip(out.requests["request_id"], out.requests["output_tokens"],
                             strict=True))
    client = pd.read_csv(out.run_dir / "client.csv")
    assert list(client.columns)[-1] == "output_tokens"
    for row in client.itertuples():
        assert row.output_tokens == server_tokens[row.request_id] == MAX_NEW_TOKENS


def test_a_client_side_run_matches_the_servers_records(engine, tiny_profile,
                                                       server_workloads: Path,
                                                       tmp_path: Path) -> None:
    """The server treated as any OpenAI server (no /start, no /stop): the client-side run's
    metrics from client.csv agree with what the server recorded of the same requests."""
    schedule = schedule_for(server_workloads, mean_rps=5.0, duration_s=3.0, seed=6)
    prompts = read_workloads(server_workloads)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    api = ApiMode("openai-chat", max_tokens=MAX_NEW_TOKENS, api_key=SECRET_KEY)
    with live_server(engine, tiny_profile, make_strategy("Immediate"), MAX_NEW_TOKENS,
                     tmp_path / "server") as (url, server):
        result = send_schedule(url, schedule, prompts, client_csv=client_dir / "client.csv",
                               timeout_s=120.0, api=api, control=False)
        stop = requests.post(f"{url}/stop", json={}, timeout=60).json()
    schedule.write_csv(client_dir / "schedule.csv")
    assert result.stop_answer is None
    write_json_atomic(client_dir / "run.json", client_run_json(
        "client", {"pattern": "gamma", "mean_rps": 5.0, "duration_s": 3.0, "sla_s": 8.0,
                   "strategy": "external"}, {"cc_mode": "off"},
        read_client(client_dir, REQUIRED_CLIENT_COLUMNS), len(schedule), 0.0))
    record = summarise_run(client_dir)
    server_rows = pd.read_csv(tmp_path / "server" / "requests.csv")
    assert stop["accounting"]["received"] == stop["accounting"]["completed"] == len(schedule)
    assert sorted(server_rows["request_id"]) == sorted(schedule.request_ids())  # X-Request-Id
    row = record.row
    assert row["engine"] == "external" and row["cc_mode"] == "off"
    assert row["platform"] == "external server"
    assert row["requests_issued"] == row["requests_ok"] == len(schedule)
    assert row["requests_lost"] == 0 and row["swaps"] is None
    # Each request's output_tokens is the server's count of it; the rate is over the traffic
    # window, what was answered after it is in the drain.
    client = read_client(client_dir, REQUIRED_CLIENT_COLUMNS).set_index("request_id")
    server_tokens = server_rows.set_index("request_id")["output_tokens"]
    assert (client["output_tokens"] == server_tokens.reindex(client.index)).all()
    answered_in_window = client["received_s"] <= row["traffic_window_s"]
    assert row["traffic_window_s"] == 3.0
    assert row["completed_in_drain"] == (~answered_in_window).sum()
    assert row["output_tokens_per_s"] * 3.0 == pytest.approx(
        server_tokens[answered_in_window[answered_in_window].index].sum())
    assert len(record.latencies_s) == len(schedule)
    written = "".join(f.read_text() for f in client_dir.iterdir())
    assert SECRET_KEY not in written


def test_an_external_grid_against_a_running_server(engine, tiny_profile,
                                                   server_workloads: Path,
                                                   tmp_path: Path) -> None:
    """run_experiments.py with SERVER_URL: no server of its own, a client-side run directory per
    run with the CC mode the user gave, every request in the server's own records, the key
    nowhere, and process_results.py labels the runs client-side."""
    results = tmp_path / "results"
    with live_server(engine, tiny_profile, make_strategy("Immediate"), MAX_NEW_TOKENS,
                     tmp_path / "server") as (url, server):
        command = [sys.executable, str(ROOT / "run_experiments.py"), "--server-url", url,
                   "--api", "openai-completions", "--patterns", "constant", "--means", "3",
                   "--slas", "10", "--duration-s", "2", "--max-new-tokens",
                   str(MAX_NEW_TOKENS), "--cc-mode", "on", "--results-dir", str(results),
                   "--workloads-dir", str(server_workloads)]
        env = {**os.environ, "OPENAI_API_KEY": SECRET_KEY}
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        # The run's identity as planned is the one written: a rerun skips it, and a grid that
        # asks another way (another API) is refused rather than mixed with it.
        again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert again.returncode == 0
        assert "1 runs (1 already done with these parameters)" in again.stdout
        other = subprocess.run([*command[:5], "openai-chat", *command[6:]], capture_output=True,
                               text=True, timeout=300, env=env)
        assert other.returncode == 2 and "other parameters" in other.stderr
        stop = requests.post(f"{url}/stop", json={}, timeout=60).json()
    run_dir = results / "external__constant__rate3__sla10__rep0"
    run = read_client(run_dir, REQUIRED_CLIENT_COLUMNS)
    info = pd.read_json(run_dir / "run.json", typ="series")
    assert info["side"] == "client" and info["environment"]["cc_mode"] == "on"
    assert info["environment"]["cc_mode_source"] == "given by the user (CC_MODE)"
    assert info["accounting_check"]["ok"] and info["status"] == "complete"
    assert info["params"]["strategy_params"]["server_url"] == url
    assert len(run) == 6 and (run["http_status"] == 200).all()
    assert stop["accounting"]["received"] == stop["accounting"]["completed"] == len(run)
    assert not (results / ".partial").exists()
    files = [f for f in run_dir.iterdir() if f.is_file()]
    assert SECRET_KEY not in "".join(f.read_text() for f in files) + done.stdout + done.stderr
    report = subprocess.run([sys.executable, str(ROOT / "process_results.py"), str(results)],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    summary = pd.read_csv(results / "report" / "summary_runs.csv")
    assert list(summary["group"]) == ["client-side, CC on"]
    assert summary.loc[0, "requests_ok"] == 6 and summary.loc[0, "strategy"] == "external"
