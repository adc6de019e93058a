"""What a fast engine buys: the original study's grid cell replayed on several profile sets.

    python benchmarks/what_it_buys.py                          # the default cell, 3 seeds
    python benchmarks/what_it_buys.py --sla 60 --out /tmp/what_it_buys.csv

Each strategy of the original study meets each traffic pattern at MEAN requests/s with an SLA
of SLA seconds for DURATION_S of traffic, in the simulator (sincere.simulation.simulator.simulate,
the strategy objects the server uses), once per profile set and seed: the same arrivals for every
strategy and profile set of a pattern and seed. The shipped sets are the original study's way
(``h100-orig_noncc``: float32, Hugging Face pipeline, loads from disk; ``h100-orig_cc`` the same
under CC), bf16 eager ``generate`` with swaps from pinned host memory (``h100_noncc``, measured) and
the fast engine (``h100-fast_noncc``: static KV cache + torch.compile; Llama measured, granite and
gemma derived, see tools/make_example_profiles.py). Prints SLA attainment (mean of the seeds and
their range), p90 latency and throughput, and the ratio FAST / BASELINE of SLA attainment; writes
nothing unless --out names a CSV (one row per run).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere import schemas  # noqa: E402
from sincere.cli import parse_constants  # noqa: E402
from sincere.profiles.profile_set import ProfileSet, load_profiles  # noqa: E402
from sincere.runs.metrics import run_metrics  # noqa: E402
from sincere.runs.records import as_row  # noqa: E402
from sincere.scheduling.strategies import make_strategy  # noqa: E402
from sincere.simulation.simulator import simulate  # noqa: E402
from sincere.traffic.schedule import build_schedule  # noqa: E402

PROFILE_SETS = ["h100-orig_noncc", "h100-orig_cc", "h100_noncc",
                "h100-fast_noncc"]  # profile sets compared, side by side
BASELINE = "h100-orig_noncc"  # the denominator of the ratio (the original study's way)
FAST = "h100-fast_noncc"  # the numerator of the ratio (the fast engine)
PROFILES_DIR = "profiling_results"  # folder of the profile CSVs
STRATEGIES = ["BestBatch", "BestBatch+Timer", "SelectBatch+Timer",
              "BestBatch+PartialBatch+Timer"]  # the original study's strategies
PATTERNS = ["gamma", "bursty", "ramp"]  # traffic patterns
MEAN = 12.0  # mean request rate, requests per second
SLA = 40.0  # SLA, seconds from arrival to completion
DURATION_S = 1200.0  # traffic duration of each run, seconds
MODEL_MIX = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}  # share of each model
MAX_NEW_TOKENS = 50  # new tokens per request
REPEATS = 3  # runs per cell; repeat r uses arrival seed SEED + r
SEED = 0  # base arrival seed
WORKERS = 0  # worker processes (0 = one per core)
OUT = ""  # optional CSV path for one row per run (empty: stdout only)

_METRICS = ["sla_attainment", "latency_p90_s", "throughput_rps", "requests_unserved", "swaps"]


def replay(task: tuple[str, ProfileSet, str, str, int, dict]) -> dict:
    """One simulated run (a worker's unit); its metrics as process_results.py computes them."""
    name, profiles, strategy, pattern, seed, cfg = task
    schedule = build_schedule(pattern, cfg["MEAN"], cfg["DURATION_S"], seed, cfg["MODEL_MIX"])
    outcome = simulate(schedule, make_strategy(strategy), profiles, cfg["SLA"],
                       cfg["MAX_NEW_TOKENS"], cfg["DURATION_S"], seed=seed)
    summary = run_metrics(
        pd.DataFrame([r.row() for r in outcome.requests], columns=schemas.REQUEST_COLUMNS),
        pd.DataFrame([as_row(b) for b in outcome.batches], columns=schemas.BATCH_COLUMNS),
        outcome.run_time_s)
    return {"profiles": name, "strategy": strategy, "pattern": pattern, "seed": seed,
            "requests": len(schedule), **{m: summary[m] for m in _METRICS}}


def describe(profiles: ProfileSet, max_new_tokens: int) -> str:
    """A profile set's dtype, CC mode and per model its best batch, that batch's time, load."""
    parts = []
    for model in sorted(profiles.models):
        best = profiles[model].best_batch(max_new_tokens)
        parts.append(f"{model} {best} in {profiles[model].processing_s(best, max_new_tokens):.1f}"
                     f" s, load {profiles.load_s(model):.2f} s")
    return f"{profiles.dtype}, cc {profiles.cc_mode}; best batch " + ", ".join(parts)


def cell(runs: list[dict], metric: str) -> list[float]:
    return [math.nan if r[metric] is None else float(r[metric]) for r in runs]


def attainment(values: list[float]) -> str:
    """``99.5% (99.1-99.8)``: the mean of the seeds and their range."""
    mean = statistics.fmean(values)
    return f"{mean:6.1%} ({min(values):.1%}-{max(values):.1%})"


def ratio(fast: float, baseline: float) -> str:
    if baseline > 0:
        return f"{fast / baseline:.1f}x"
    return "inf" if fast > 0 else "n/a"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)
                        for i, (v, w) in enumerate(zip(row, widths, strict=True))))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    for name in cfg.STRATEGIES:
        make_strategy(name)  # an unknown name fails before anything runs
    profiles_dir = Path(cfg.PROFILES_DIR)
    if not profiles_dir.is_absolute() and not profiles_dir.is_dir():
        profiles_dir = Path(__file__).resolve().parent.parent / profiles_dir
    sets = {name: load_profiles(name, profiles_dir) for name in cfg.PROFILE_SETS}
    shared = {k: getattr(cfg, k) for k in ("MEAN", "DURATION_S", "MODEL_MIX", "SLA",
                                           "MAX_NEW_TOKENS")}
    tasks = [(name, profiles, strategy, pattern, cfg.SEED + r, shared)
             for name, profiles in sets.items() for strategy in cfg.STRATEGIES
             for pattern in cfg.PATTERNS for r in range(cfg.REPEATS)]
    started = time.monotonic()
    workers = min(cfg.WORKERS or os.cpu_count() or 1, len(tasks))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(replay, tasks, chunksize=2))
    else:
        runs = [replay(task) for task in tasks]
    elapsed = time.monotonic() - started

    by_cell: dict[tuple[str, str, str], list[dict]] = {}
    for run in runs:
        by_cell.setdefault((run["strategy"], run["pattern"], run["profiles"]), []).append(run)
    print(f"{cfg.MEAN:g} requests/s, SLA {cfg.SLA:g} s, {cfg.DURATION_S:g} s of traffic, "
          f"mix {' '.join(f'{m} {w:g}' for m, w in cfg.MODEL_MIX.items())}, "
          f"{cfg.MAX_NEW_TOKENS} new tokens; seeds {cfg.SEED}-{cfg.SEED + cfg.REPEATS - 1}; "
          f"{len(runs)} simulated runs in {elapsed:.1f} s")
    for name, profiles in sets.items():
        print(f"  {name}: {describe(profiles, cfg.MAX_NEW_TOKENS)}")

    keys = [(s, p) for s in cfg.STRATEGIES for p in cfg.PATTERNS]
    ratio_name = f"{cfg.FAST} / {cfg.BASELINE}"
    rows = []
    for strategy, pattern in keys:
        sla = {n: cell(by_cell[(strategy, pattern, n)], "sla_attainment") for n in sets}
        rows.append([strategy, pattern, *(attainment(sla[n]) for n in sets),
                     ratio(statistics.fmean(sla[cfg.FAST]), statistics.fmean(sla[cfg.BASELINE]))
                     if {cfg.FAST, cfg.BASELINE} <= set(sets) else "n/a"])
    print_table(f"SLA attainment, mean of {cfg.REPEATS} seeds (min-max)",
                ["strategy", "pattern", *sets, ratio_name], rows)
    rows = [[strategy, pattern,
             *(f"{statistics.fmean(cell(by_cell[(strategy, pattern, n)], 'latency_p90_s')):.1f}"
               f" / {statistics.fmean(cell(by_cell[(strategy, pattern, n)], 'throughput_rps')):.2f}"
               for n in sets)]
            for strategy, pattern in keys]
    print_table(f"p90 latency (s) / throughput (completed requests/s), mean of {cfg.REPEATS} seeds",
                ["strategy", "pattern", *sets], rows)
    if cfg.OUT:
        with Path(cfg.OUT).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(runs[0]))
            writer.writeheader()
            writer.writerows(runs)
        print(f"\nwrote {cfg.OUT} ({len(runs)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
