"""Replay the experiment grid in a discrete-event simulation from the profiles.

Each run becomes a run directory like a real one (engine ``sim``), so process_results.py reads
simulated and measured runs alike. The defaults are the original study's grid on its H100
profile; name another profile set with --profiles (see profiling_results/).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sincere.cli import parse_constants
from sincere.grid import expand_grid, run_is_complete
from sincere.profiles import load_profiles
from sincere.simulator import SimTask, run_task
from sincere.traffic import options_from_constants

RESULTS_DIR = "results_sim"  # where the run directories go
PROFILES = "h100-orig_noncc"  # profile set: <device>_<cc|noncc> prefix in PROFILES_DIR, or a path
PROFILES_DIR = "profiling_results"  # folder of model_loading_times_*.csv / batch_profiling_*.csv
STRATEGIES = ["BestBatch", "BestBatch+Timer", "SelectBatch+Timer",
              "BestBatch+PartialBatch+Timer"]  # strategies to compare
PATTERNS = ["gamma", "bursty", "ramp"]  # traffic patterns
MEANS = [4.0, 8.0, 12.0]  # mean request rates, requests per second
SLAS = [40.0, 60.0, 80.0]  # SLAs, seconds from arrival to completion
REPEATS = 1  # runs per grid cell (each with its own arrival seed)
DURATION_S = 1200.0  # traffic duration of each run, seconds
SEED = 0  # base seed of the arrivals (repeat r uses SEED + r)
MODEL_MIX = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}  # share of each model
MAX_NEW_TOKENS = 50  # new tokens per request
DRAIN_TIMEOUT_S = 600.0  # after the traffic ends, serve the queues for at most this long
STD_FACTOR = 1.0  # k: the scheduler plans load time as mean + k * std
MARGIN_S = 1.0  # safety margin of the timers, seconds
MAX_QUEUE_DELAY_S = 1.0  # Dynamic+Delay: longest wait of the oldest request, seconds
RATE_WINDOW_S = 60.0  # SelectBatch+Timer: window of the arrival-rate estimate, seconds
JITTER = True  # draw swap and batch times around the profiled means (seeded)
GAMMA_SHAPE = 1.0  # gamma pattern: shape k (1 = Poisson; CV = 1/sqrt(k))
BURST_ON_S = 2.0  # bursty pattern: mean burst duration, seconds
BURST_OFF_S = 12.0  # bursty pattern: mean idle duration, seconds
BURST_PEAK_TO_MEAN = 5.0  # bursty pattern: rate inside a burst / mean rate
RAMP_PERIOD_S = 40.0  # ramp pattern: period of the triangle, seconds
RAMP_ALPHA = 0.75  # ramp pattern: rate swings between mean*(1-alpha) and mean*(1+alpha)
TRACE_PATH = ""  # trace pattern: Azure CSV or Mooncake JSONL to replay
WORKERS = 0  # worker processes (0 = one per core)
OVERWRITE = False  # rerun runs whose directory is already complete


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    profiles = load_profiles(cfg.PROFILES, Path(cfg.PROFILES_DIR), std_factor=cfg.STD_FACTOR)
    points = expand_grid(cfg.STRATEGIES, cfg.PATTERNS, cfg.MEANS, cfg.SLAS, cfg.REPEATS)
    results_dir = Path(cfg.RESULTS_DIR)
    strategy_options = {"margin_s": cfg.MARGIN_S, "max_queue_delay_s": cfg.MAX_QUEUE_DELAY_S,
                        "rate_window_s": cfg.RATE_WINDOW_S}
    tasks = [SimTask(point=p, run_dir=results_dir / p.run_id, profiles=profiles,
                     profiles_name=cfg.PROFILES, duration_s=cfg.DURATION_S, base_seed=cfg.SEED,
                     model_mix=dict(cfg.MODEL_MIX), max_new_tokens=cfg.MAX_NEW_TOKENS,
                     drain_timeout_s=cfg.DRAIN_TIMEOUT_S, jitter=cfg.JITTER,
                     strategy_options=strategy_options,
                     pattern_options=options_from_constants(cfg, p.pattern),
                     rate_window_s=cfg.RATE_WINDOW_S)
             for p in points
             if cfg.OVERWRITE or not run_is_complete(results_dir / p.run_id)]
    skipped = len(points) - len(tasks)
    print(f"simulate: {len(points)} runs ({skipped} already complete) with profiles "
          f"{Path(profiles.loading_file).name} (cc_mode {profiles.cc_mode}) -> {results_dir}/")
    workers = cfg.WORKERS or os.cpu_count() or 1
    started = time.monotonic()
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            runs = pool.map(run_task, tasks, chunksize=1)
            for n, run in enumerate(runs, start=1):
                print_progress(n, len(tasks), run)
    else:
        for n, task in enumerate(tasks, start=1):
            print_progress(n, len(tasks), run_task(task))
    print(f"simulate: {len(tasks)} runs in {time.monotonic() - started:.1f} s; results in "
          f"{results_dir}/ (summarise with: python process_results.py {results_dir})")
    return 0


def print_progress(n: int, total: int, run: dict) -> None:
    summary, accounting = run["summary"], run["accounting"]
    print(f"[{n}/{total}] {run['run_id']}: SLA {summary['sla_attainment']:.1%}, "
          f"p90 {summary['latency_p90_s']:.1f} s, {summary['throughput_rps']:.2f} req/s, "
          f"{summary['swaps']} swaps, unserved {accounting['unserved']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
