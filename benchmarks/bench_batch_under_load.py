"""The same batch timed alone and while requests arrive at the rate of a burst, in the server.

    python benchmarks/bench_batch_under_load.py                  # llama3-8b, 5 rounds each way
    python benchmarks/bench_batch_under_load.py --rounds 8 --burst-rps 40

A profile is measured with no traffic; the server runs its batches while request threads parse,
queue, record and answer. If those threads slow the batches down, every simulation of the
server from the profile is off, most under bursts. This benchmark starts the real server
(api_scheduler_experiments.py, BestBatch, the model's best batch B from the profile) once per
layout, the engine in its own process (the default) and in the server's process, and from this
process sends, round after round:
  - alone: B requests with the same B prompts; BestBatch runs them as one batch;
  - under a burst: the same B requests, then BURST_BATCHES x B more at BURST_RPS while that
    batch runs (they queue, then run in full batches after it).
Rounds alternate, each waits until every answer is in, and the batch of the B probes is the
very same batch each time (same prompts, same size). It reports each layout's mean processing
time alone and under the burst and their ratio (goal: at most 1.05), from one run. This process
keeps to the server's side of the cores, as run_experiments.py keeps the generator. Needs the
tiny models, workloads and a profile of this machine (run_pipeline.sh's first three stages).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere.cli import parse_constants  # noqa: E402

MODEL = "llama3-8b"  # the model of the probe batch and the burst
ROUNDS = 5  # rounds each way (alone, under a burst), alternating
BURST_RPS = 30.0  # the burst's arrival rate (a bursty pattern's peak: 5 x 6 requests/s)
BURST_BATCHES = 2  # the burst sends this many best batches of requests
MAX_NEW_TOKENS = 50  # new tokens per request
MODELS_DIR = "models"  # tiny models (download_models.py --random --tiny)
WORKLOADS_DIR = "workloads"  # prompts (generate_workloads_jsonl.py --synthetic 500)
PROFILES = "cpu_noncc"  # profile set of this machine (run_profiling.sh)
PROFILES_DIR = "profiling_results"  # folder of the profile CSVs
LAYOUTS = ["process", "thread"]  # engine in its own process, or in the server's process


def probe_rounds(url: str, prompts: list[str], burst: list[str], rounds: int,
                 burst_rps: float) -> dict[str, list[float]]:
    """Alternate rounds alone and under a burst; each round's probe batch processing time."""
    import requests

    session_local = threading.local()

    def post(prompt: str) -> dict:
        session = getattr(session_local, "session", None) or requests.Session()
        session_local.session = session
        answer = session.post(f"{url}/inference", json={"prompt": prompt, "model_alias": MODEL},
                              timeout=600)
        answer.raise_for_status()
        return answer.json()

    times: dict[str, list[float]] = {"alone": [], "burst": []}
    with ThreadPoolExecutor(max_workers=len(prompts) + len(burst) + 4) as pool:
        for _ in range(rounds):
            for kind in ("alone", "burst"):
                probes = [pool.submit(post, p) for p in prompts]
                extra = []
                if kind == "burst":
                    # The burst starts once the probes' batch runs: no burst request can join it.
                    while requests.get(f"{url}/status", timeout=30).json()["running"] != MODEL:
                        time.sleep(0.005)
                    started = time.monotonic()
                    for i, prompt in enumerate(burst):
                        time.sleep(max(0.0, started + i / burst_rps - time.monotonic()))
                        extra.append(pool.submit(post, prompt))
                processing = {round(f.result()["processing_s"], 6) for f in probes}
                if len(processing) != 1:
                    raise RuntimeError(f"the probes did not run as one batch: {processing}")
                times[kind].append(processing.pop())
                for future in extra:
                    future.result()
    return times


def run_layout(layout: str, cfg, prompts: list[str], burst: list[str], best: int) -> dict:
    import requests

    from sincere.grid.children import start_server
    from sincere.host.processes import split_cores

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        run_dir.mkdir()
        server, url = start_server({
            "MODE": "BestBatch", "SLA": 600.0, "MAX_NEW_TOKENS": cfg.MAX_NEW_TOKENS,
            "MODELS_DIR": Path(cfg.MODELS_DIR).resolve(), "PROFILES": cfg.PROFILES,
            "PROFILES_DIR": Path(cfg.PROFILES_DIR).resolve(), "MODELS": [MODEL],
            "ENGINE_PROCESS": layout == "process", "PIN_CORES": True}, run_dir,
            Path(scratch) / "server.log", timeout_s=600.0)
        split = split_cores() if layout == "process" else None
        mine = os.sched_getaffinity(0) if split else None
        try:
            if split:  # this process plays the generator: the server's side of the cores
                os.sched_setaffinity(0, split[0])
            requests.post(f"{url}/start", json={}, timeout=30).raise_for_status()
            times = probe_rounds(url, prompts, burst, cfg.ROUNDS, cfg.BURST_RPS)
            requests.post(f"{url}/stop", json={"wait": True}, timeout=600)
            server.process.wait(120)
        finally:
            if mine is not None:
                os.sched_setaffinity(0, mine)
            server.stop()
    alone, under = statistics.mean(times["alone"]), statistics.mean(times["burst"])
    return {"layout": layout, "batch": best, "alone_s": alone, "burst_s": under,
            "ratio": under / alone, "alone": times["alone"], "burst": times["burst"]}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    from sincere.assets.workloads import read_workloads
    from sincere.profiles.profile_set import load_profiles

    profiles = load_profiles(cfg.PROFILES, Path(cfg.PROFILES_DIR))
    best = profiles[MODEL].best_batch(cfg.MAX_NEW_TOKENS)
    texts = [text for _, text in sorted(read_workloads(Path(cfg.WORKLOADS_DIR)).items())]
    prompts = texts[:best]
    burst = texts[best:best + best * cfg.BURST_BATCHES]
    print(f"{MODEL}: best batch {best}, {cfg.ROUNDS} rounds alone and under a burst of "
          f"{len(burst)} requests at {cfg.BURST_RPS:g} requests/s")
    results = [run_layout(layout, cfg, prompts, burst, best) for layout in cfg.LAYOUTS]
    print(f"{'layout':<10} {'alone (s)':>10} {'burst (s)':>10} {'burst/alone':>12}")
    for row in results:
        print(f"{row['layout']:<10} {row['alone_s']:>10.3f} {row['burst_s']:>10.3f} "
              f"{row['ratio']:>12.3f}")
        print(f"  rounds alone {[round(t, 3) for t in row['alone']]}, "
              f"burst {[round(t, 3) for t in row['burst']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
