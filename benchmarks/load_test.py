"""Overload the experiment server on loopback and check that it answers everything.

    python benchmarks/load_test.py                      # 200 req/s for 30 s, 2,000 in flight
    python benchmarks/load_test.py --rate 100 --duration-s 10

The server (api_scheduler_experiments.py, its own process, the tiny models) gets an open-loop
Poisson stream far above what it can serve, from up to MAX_IN_FLIGHT sender threads; its queue
limit (MAX_QUEUE) turns the excess away with 429. Checked: every request answered with 200 or
429 (no connection error, no timeout, no 5xx), the server's accounting (issued = received =
ok + rejected + failed + unserved, 429s = rejected), and the server's resident memory, sampled
every 0.5 s. Prints one table; exits 1 when a check fails. Needs models, workloads and a
profile of this machine (run_pipeline.sh's first three stages).
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO_ROOT))

from sincere.cli import parse_constants  # noqa: E402

RATE = 200.0  # offered requests per second (Poisson)
DURATION_S = 30.0  # seconds of traffic
MAX_IN_FLIGHT = 2000  # sender threads: requests that may wait for an answer at once
MAX_QUEUE = 1500  # the server's queue limit (beyond it: 429), below MAX_IN_FLIGHT
MODE = "BestBatch+Timer"  # the server's strategy
SLA = 30.0  # SLA, seconds
MAX_NEW_TOKENS = 8  # new tokens per request
DRAIN_TIMEOUT_S = 600.0  # the server's drain timeout
MODELS_DIR = "models"  # tiny models (download_models.py --random --tiny)
WORKLOADS_DIR = "workloads"  # prompts (generate_workloads_jsonl.py --synthetic 500)
PROFILES = "auto"  # profile set of this machine
PROFILES_DIR = "profiling_results"  # profile CSVs
SEED = 0  # arrival seed


def sample_memory(pid: int, stop: threading.Event, samples: list[float]) -> None:
    """Resident set size of ``pid`` (MiB) every 0.5 s until ``stop``."""
    process = psutil.Process(pid)
    while not stop.wait(0.5):
        try:
            samples.append(process.memory_info().rss / 2**20)
        except psutil.Error:
            return


def run_load(models_dir: Path, workloads_dir: Path, profiles: str, profiles_dir: Path, *,
             rate: float, duration_s: float, max_in_flight: int, max_queue: int,
             mode: str = MODE, sla_s: float = SLA, max_new_tokens: int = MAX_NEW_TOKENS,
             drain_timeout_s: float = DRAIN_TIMEOUT_S, seed: int = 0) -> dict[str, Any]:
    """One overload run; the figures and the problems found (an empty list when all held)."""
    from sincere.assets.architectures import DEFAULT_MODEL_MIX
    from sincere.assets.workloads import read_workloads
    from sincere.grid.children import start_server
    from sincere.traffic.client import send_schedule
    from sincere.traffic.schedule import build_schedule

    prompts = read_workloads(workloads_dir)
    schedule = build_schedule("poisson", rate, duration_s, seed, DEFAULT_MODEL_MIX,
                              prompt_ids=sorted(prompts))
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        run_dir.mkdir()
        server, url = start_server({
            "MODE": mode, "SLA": sla_s, "MAX_NEW_TOKENS": max_new_tokens,
            "MODELS_DIR": models_dir.resolve(), "PROFILES": profiles,
            "PROFILES_DIR": profiles_dir.resolve(), "MAX_QUEUE": max_queue,
            "DRAIN_TIMEOUT_S": drain_timeout_s}, run_dir, Path(scratch) / "server.log",
            timeout_s=300.0)
        memory_mib: list[float] = []
        stop = threading.Event()
        started = time.monotonic()
        try:
            sampler = threading.Thread(target=sample_memory,
                                       args=(server.process.pid, stop, memory_mib), daemon=True)
            sampler.start()
            result = send_schedule(url, schedule, prompts, client_csv=run_dir / "client.csv",
                                   timeout_s=drain_timeout_s + duration_s + 60,
                                   max_in_flight=max_in_flight)
            server.process.wait(60)
        finally:
            stop.set()
            server.stop()
        wall_s = time.monotonic() - started
        run = json.loads((run_dir / "run.json").read_text())
    answers = collections.Counter(
        row["http_status"] if row["http_status"] is not None else row["error"]
        for row in result.rows)
    accounting = run["accounting"]
    problems = []
    others = {k: v for k, v in answers.items() if k not in (200, 429)}
    if others:
        problems.append(f"answers other than 200 or 429: {others}")
    if len(result.rows) != len(schedule):
        problems.append(f"{len(schedule)} sent, {len(result.rows)} answered")
    if not (accounting["issued"] == accounting["received"] == len(schedule)):
        problems.append(f"issued {accounting['issued']}, received {accounting['received']}, "
                        f"sent {len(schedule)}")
    if accounting["received"] != sum(accounting[k] for k in (
            "completed", "rejected", "failed", "unserved")):
        problems.append(f"accounting does not add up: {accounting}")
    if answers.get(429, 0) != accounting["rejected"] or answers.get(200, 0) != accounting[
            "completed"]:
        problems.append(f"client {dict(answers)} against server {accounting}")
    return {"requests": len(schedule), "answers": dict(answers), "accounting": accounting,
            "memory_mib_first": memory_mib[0] if memory_mib else None,
            "memory_mib_peak": max(memory_mib) if memory_mib else None,
            "memory_mib_last": memory_mib[-1] if memory_mib else None,
            "max_send_lateness_s": result.max_send_lateness_s, "wall_s": wall_s,
            "run_time_s": run["run_time_s"], "problems": problems}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    figures = run_load(Path(cfg.MODELS_DIR), Path(cfg.WORKLOADS_DIR), cfg.PROFILES,
                       Path(cfg.PROFILES_DIR), rate=cfg.RATE, duration_s=cfg.DURATION_S,
                       max_in_flight=cfg.MAX_IN_FLIGHT, max_queue=cfg.MAX_QUEUE, mode=cfg.MODE,
                       sla_s=cfg.SLA, max_new_tokens=cfg.MAX_NEW_TOKENS,
                       drain_timeout_s=cfg.DRAIN_TIMEOUT_S, seed=cfg.SEED)
    print(f"{figures['requests']} requests offered at {cfg.RATE:g} req/s for "
          f"{cfg.DURATION_S:g} s (up to {cfg.MAX_IN_FLIGHT} in flight, queue limit "
          f"{cfg.MAX_QUEUE}); {figures['wall_s']:.0f} s in all, server run "
          f"{figures['run_time_s']:.0f} s")
    print(f"answers: {figures['answers']}")
    print(f"server accounting: {figures['accounting']}")
    print(f"server resident memory (MiB): first {figures['memory_mib_first']:.0f}, peak "
          f"{figures['memory_mib_peak']:.0f}, last {figures['memory_mib_last']:.0f}")
    print(f"dispatcher at most {figures['max_send_lateness_s'] * 1000:.1f} ms late")
    for problem in figures["problems"]:
        print(f"PROBLEM: {problem}")
    print("all checks held" if not figures["problems"] else "checks FAILED")
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
