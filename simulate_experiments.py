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

from sincere.assets.workloads import read_workloads
from sincere.cli import parse_constants
from sincere.grid.points import PlannedRun, RunConflict, expand_grid, runs_to_do
from sincere.profiles.length_term import prompt_token_counts
from sincere.profiles.profile_set import ProfileError, ProfileSet, load_profiles
from sincere.runs.identity import run_identity
from sincere.scheduling.strategies import options_from_constants as strategy_options
from sincere.simulation.simulator import SimTask, run_task
from sincere.traffic.patterns import options_from_constants

RESULTS_DIR = "results_sim"  # where the run directories go
PROFILES = "h100-orig_noncc"  # profile set: <device>_<cc|noncc> prefix in PROFILES_DIR, or a path
PROFILES_DIR = "profiling_results"  # folder of model_loading_times_*.csv / batch_profiling_*.csv
STRATEGIES = ["BestBatch", "BestBatch+Timer", "SelectBatch+Timer",
              "BestBatch+PartialBatch+Timer"]  # strategies to compare
PATTERNS = ["gamma", "bursty", "ramp"]  # traffic patterns
MEANS = [4.0, 8.0, 12.0]  # mean request rates, requests per second
SLAS = [40.0, 60.0, 80.0]  # SLAs, seconds from arrival to completion
REPEATS = 3  # runs per grid cell (each with its own arrival seed): intervals need 2 or more
DURATION_S = 1200.0  # traffic duration of each run, seconds
SEED = 0  # base seed of the arrivals (repeat r uses SEED + r)
MODEL_MIX = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}  # share of each model
MAX_NEW_TOKENS = 50  # new tokens per request
DRAIN_TIMEOUT_S = 600.0  # after the traffic ends, serve the queues for at most this long
MAX_QUEUE = 3000  # requests arriving while this many wait are refused (rejected), as the server
STD_FACTOR = 1.0  # k: the scheduler plans load time as mean + k * std
MARGIN_S = 1.0  # safety margin of the timers, seconds
SHED_LATE = False  # shed requests that can no longer meet their SLA (always on for MaxGoodput)
MAX_QUEUE_DELAY_S = 1.0  # Dynamic+Delay: longest wait of the oldest request, seconds
RATE_WINDOW_S = 60.0  # SelectBatch+Timer: window of the arrival-rate estimate, seconds
JITTER = True  # draw swap and batch times around the profiled means (seeded)
REPLAYS = 1  # replays of each run's arrivals with other jitter seeds: run.json gives their spread
LENGTH_TERM = True  # time each batch by its longest prompt, where the profile has a length term
WORKLOADS_DIR = "workloads"  # length term: the prompts the generator draws from (same seed)
MODELS_DIR = "models"  # length term: the served models' tokenizers, to count prompt tokens
GAMMA_SHAPE = 1.0  # gamma pattern: shape k (1 = Poisson; CV = 1/sqrt(k))
BURST_ON_S = 2.0  # bursty pattern: mean burst duration, seconds
BURST_OFF_S = 12.0  # bursty pattern: mean idle duration, seconds
BURST_PEAK_TO_MEAN = 5.0  # bursty pattern: rate inside a burst / mean rate
RAMP_PERIOD_S = 40.0  # ramp pattern: period of the triangle, seconds
RAMP_ALPHA = 0.75  # ramp pattern: rate swings between mean*(1-alpha) and mean*(1+alpha)
TRACE_PATH = ""  # trace pattern: Azure CSV or Mooncake JSONL to replay
WORKERS = 0  # worker processes (0 = one per core)
OVERWRITE = False  # redo runs already finished in RESULTS_DIR (else: kept if same parameters)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    if cfg.REPLAYS < 1:
        print(f"error: REPLAYS must be at least 1, got {cfg.REPLAYS}", file=sys.stderr)
        return 2
    try:
        profiles = load_profiles(cfg.PROFILES, Path(cfg.PROFILES_DIR), std_factor=cfg.STD_FACTOR)
        points = expand_grid(cfg.STRATEGIES, cfg.PATTERNS, cfg.MEANS, cfg.SLAS, cfg.REPEATS)
    except (ProfileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        prompt_tokens = served_prompt_counts(cfg, profiles)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_dir = Path(cfg.RESULTS_DIR)
    tasks = {p.run_id: SimTask(point=p, run_dir=results_dir / p.run_id, profiles=profiles,
                               profiles_name=cfg.PROFILES, duration_s=cfg.DURATION_S,
                               base_seed=cfg.SEED, model_mix=dict(cfg.MODEL_MIX),
                               max_new_tokens=cfg.MAX_NEW_TOKENS,
                               drain_timeout_s=cfg.DRAIN_TIMEOUT_S, jitter=cfg.JITTER,
                               strategy_options=strategy_options(vars(cfg)),
                               pattern_options=options_from_constants(cfg, p.pattern),
                               rate_window_s=cfg.RATE_WINDOW_S,
                               max_queue=cfg.MAX_QUEUE or None, prompt_tokens=prompt_tokens,
                               replays=cfg.REPLAYS)
             for p in points}
    try:
        todo = runs_to_do([PlannedRun(run_id, task.run_dir, run_identity(task.params()))
                           for run_id, task in tasks.items()], overwrite=cfg.OVERWRITE)
    except RunConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    todo_tasks = [tasks[run.run_id] for run in todo]
    print(f"simulate: {len(points)} runs ({len(points) - len(todo_tasks)} already complete with "
          f"these parameters) with profiles {Path(profiles.loading_file).name} (cc_mode "
          f"{profiles.cc_mode}) -> {results_dir}/")
    workers = cfg.WORKERS or os.cpu_count() or 1
    started = time.monotonic()
    if workers > 1 and len(todo_tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            runs = pool.map(run_task, todo_tasks, chunksize=1)
            for n, run in enumerate(runs, start=1):
                print_progress(n, len(todo_tasks), run)
    else:
        for n, task in enumerate(todo_tasks, start=1):
            print_progress(n, len(todo_tasks), run_task(task))
    print(f"simulate: {len(todo_tasks)} runs in {time.monotonic() - started:.1f} s; results in "
          f"{results_dir}/ (summarise with: python process_results.py {results_dir})")
    return 0


def served_prompt_counts(cfg, profiles: ProfileSet) -> dict[str, dict[str, int]] | None:
    """The tokens of every prompt the generator may send, per model, when the runs time their
    batches by their longest prompt (LENGTH_TERM, a profile with a length term, and the prompts
    and tokenizers at hand); None, saying why, otherwise."""
    if not cfg.LENGTH_TERM:
        return None
    models = sorted(cfg.MODEL_MIX)
    if not all(m in profiles.models and profiles[m].has_length_term() for m in models):
        return None  # a profile without prompt lengths (the original study's): P(b) alone
    workloads, models_dir = Path(cfg.WORKLOADS_DIR), Path(cfg.MODELS_DIR)
    if not any(workloads.glob("*.json")) or not all((models_dir / m).is_dir() for m in models):
        print(f"simulate: batches timed by their size alone: the length term needs the prompts "
              f"in {workloads}/ and the tokenizers of {', '.join(models)} in {models_dir}/")
        return None
    prompts = read_workloads(workloads)
    counts = prompt_token_counts(prompts, models, models_dir)
    print(f"simulate: batches timed by their longest prompt ({len(prompts)} prompts of "
          f"{workloads}/ counted with the tokenizers in {models_dir}/)")
    return counts


def print_progress(n: int, total: int, run: dict) -> None:
    summary, accounting = run["summary"], run["accounting"]
    print(f"[{n}/{total}] {run['run_id']}: SLA {number(summary['sla_attainment'], '.1%')}, "
          f"p90 {number(summary['latency_p90_s'], '.1f')} s, "
          f"{number(summary['throughput_rps'], '.2f')} req/s in the traffic window, "
          f"{summary['swaps']} swaps, {summary['completed_in_drain']} completed in "
          f"{number(summary['drain_s'], '.0f')} s of drain, rejected {accounting['rejected']}, "
          f"unserved {accounting['unserved']}", flush=True)


def number(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash when undefined (no request completed)."""
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
