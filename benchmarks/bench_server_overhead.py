"""The experiment server's own CPU time per request, outside inference, at a given rate.

    python benchmarks/bench_server_overhead.py                     # 30 req/s for 30 s
    python benchmarks/bench_server_overhead.py --rate 60 --duration-s 60

Two servers, each in its own process, get the same open-loop traffic from this process:
  1. baseline: a bare Flask app on the same threaded HTTP server that parses the JSON body and
     answers at once (the floor any Flask server pays per request);
  2. SINCERE: api_scheduler_experiments.py on the tiny models, with one torch thread so that all
     inference runs in the scheduler thread.
For each, the server process's CPU seconds between POST /start and the end of POST /stop; for
SINCERE minus the scheduler thread's CPU inside engine calls (run.json's server_cpu). What is
left is the server's own work (HTTP, validation, queues, strategy, records, monitor), reported
per request and as a ratio to the baseline. Needs models, workloads and a profile of this
machine (run_pipeline.sh's first three stages).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO_ROOT))

from sincere.cli import parse_constants  # noqa: E402

RATE = 30.0  # requests per second, constant arrivals
DURATION_S = 30.0  # seconds of traffic per server
PATTERN = "constant"  # arrival pattern
MODE = "BestBatch+Timer"  # SINCERE's strategy
SLA = 10.0  # SLA, seconds
MAX_NEW_TOKENS = 50  # new tokens per request
MODELS_DIR = "models"  # tiny models (download_models.py --random --tiny)
WORKLOADS_DIR = "workloads"  # prompts (generate_workloads_jsonl.py --synthetic 500)
PROFILES = "auto"  # profile set of this machine
PROFILES_DIR = "profiling_results"  # profile CSVs
BARE_SERVER = False  # internal: serve the baseline app (the benchmark starts it with this)
PORT = 0  # internal: the baseline app's port


def bare_app():
    """The baseline: Flask, JSON in and out, nothing else (start/stop report process CPU)."""
    from flask import Flask, jsonify, request

    app = Flask("bare")
    cpu_at_start = {"s": 0.0}

    @app.get("/health")
    def health():
        return jsonify(status="ok", models=["granite-7b", "gemma-7b", "llama3-8b"])

    @app.post("/start")
    def start():
        cpu_at_start["s"] = time.process_time()
        return jsonify(begun=True)

    @app.post("/inference")
    def inference():
        body = json.loads(request.get_data())
        return jsonify(status="ok", model=body["model_alias"], text="")

    @app.post("/stop")
    def stop():
        cpu_s = time.process_time() - cpu_at_start["s"]
        return jsonify(status="finished", server_cpu={"process_cpu_s": cpu_s,
                                                      "engine_cpu_s": 0.0})

    return app


def serve_bare(port: int) -> None:
    from sincere.serving.http_server import make_http_server

    make_http_server("127.0.0.1", port, bare_app()).serve_forever()


def drive(url: str, schedule, prompts, server: subprocess.Popen) -> dict:
    from sincere.traffic.client import send_schedule, wait_for_server

    wait_for_server(url, 300.0, is_alive=lambda: server.poll() is None)
    result = send_schedule(url, schedule, prompts, client_csv=None, timeout_s=300.0)
    ok = sum(1 for row in result.rows if row["http_status"] == 200)
    return {"answer": result.stop_answer or {}, "ok": ok}


def _free_port() -> int:
    """A TCP port free at this moment (for the bare app, the only server this benchmark runs
    at that time)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    if cfg.BARE_SERVER:
        serve_bare(cfg.PORT)
        return 0
    from sincere.assets.architectures import DEFAULT_MODEL_MIX
    from sincere.assets.workloads import read_workloads
    from sincere.grid.children import Child, start_server
    from sincere.traffic.schedule import build_schedule

    prompts = read_workloads(Path(cfg.WORKLOADS_DIR))
    schedule = build_schedule(cfg.PATTERN, cfg.RATE, cfg.DURATION_S, 0, DEFAULT_MODEL_MIX,
                              prompt_ids=sorted(prompts))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        port = _free_port()
        bare = Child.start("bare", [sys.executable, __file__, "--bare-server", "--port",
                                    str(port)], scratch_dir / "bare.log")
        try:
            outcome = drive(f"http://127.0.0.1:{port}", schedule, prompts, bare.process)
        finally:
            bare.stop()
        cpu = outcome["answer"]["server_cpu"]
        rows.append(("bare Flask (baseline)", outcome["ok"], cpu["process_cpu_s"], 0.0))

        run_dir = scratch_dir / "run"
        run_dir.mkdir()
        server, url = start_server({
            "MODE": cfg.MODE, "SLA": cfg.SLA, "MAX_NEW_TOKENS": cfg.MAX_NEW_TOKENS,
            "MODELS_DIR": Path(cfg.MODELS_DIR).resolve(), "PROFILES": cfg.PROFILES,
            "PROFILES_DIR": Path(cfg.PROFILES_DIR).resolve(), "CPU_THREADS": 1}, run_dir,
            scratch_dir / "server.log", timeout_s=300.0)
        try:
            outcome = drive(url, schedule, prompts, server.process)
            server.process.wait(60)
        finally:
            server.stop()
        run = json.loads((run_dir / "run.json").read_text())
        cpu = run["server_cpu"]
        rows.append((f"SINCERE {cfg.MODE}", outcome["ok"], cpu["process_cpu_s"],
                     cpu["engine_cpu_s"]))
        batches = run["summary"].get("batches")
    print(f"{len(schedule)} requests, {cfg.PATTERN} at {cfg.RATE:g} req/s for "
          f"{cfg.DURATION_S:g} s; SINCERE ran {batches} batches of {cfg.MAX_NEW_TOKENS} new "
          f"tokens")
    print(f"{'server':<28}{'answered':>9}{'CPU s':>9}{'inference':>11}{'own CPU':>9}"
          f"{'ms/request':>12}{'ratio':>8}")
    base_ms = None
    for name, ok, process_s, engine_s in rows:
        own_s = process_s - engine_s
        per_ms = 1000 * own_s / max(ok, 1)
        base_ms = base_ms if base_ms is not None else per_ms
        print(f"{name:<28}{ok:>9}{process_s:>9.2f}{engine_s:>11.2f}{own_s:>9.2f}"
              f"{per_ms:>12.3f}{per_ms / base_ms:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
