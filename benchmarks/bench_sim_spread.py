"""How far one run's SLA attainment can move on the same arrivals: the simulator's own spread.

    python benchmarks/bench_sim_spread.py                       # the pipeline's bursty cells
    python benchmarks/bench_sim_spread.py --strategies Immediate --seeds 50 --relative-sds 0.05

A measured run is one draw: its batches take a little more or less than profiled, and under a
burst that decides which requests share a batch (a long prompt in a batch of 11 costs 11 times
its length), and so the whole queue after it. This benchmark replays one cell's arrivals (the
generator's schedule and prompts for SEED, as simulate_experiments.py builds them) SEEDS times in
the simulator, each time with its batch and swap times drawn around the profile with another
jitter seed, and prints the spread of SLA attainment and mean latency over those replays: once
with the profile's own spread of batch times, and once per RELATIVE_SDS (a batch time's relative
standard deviation put in its place, e.g. that measured of the server's batches against the
profile, shown by the report as processing_vs_profile's spread). No two single runs, simulated
or measured, can be expected to agree more closely than this spread. Needs the tiny models,
workloads and a profile of this machine (run_pipeline.sh's first three stages).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere.cli import parse_constants  # noqa: E402

STRATEGIES = ["BestBatch+Timer", "SelectBatch+Timer", "Immediate"]  # strategies to replay
PATTERN = "bursty"  # traffic pattern of the cell
MEAN_RPS = 6.0  # mean request rate, requests per second
SLA_S = 4.0  # SLA, seconds
DURATION_S = 30.0  # seconds of traffic
SEED = 0  # the arrivals' seed (the pipeline's first repeat)
SEEDS = 30  # jitter seeds: replays of the same arrivals
RELATIVE_SDS = [0.075]  # relative sd of a batch's time to try besides the profile's own
MAX_NEW_TOKENS = 50  # new tokens per request
MODELS_DIR = "models"  # the tokenizers that count the prompts (download_models.py)
WORKLOADS_DIR = "workloads"  # prompts (generate_workloads_jsonl.py)
PROFILES = "cpu_noncc"  # profile set of this machine (run_profiling.sh)
PROFILES_DIR = "profiling_results"  # folder of the profile CSVs


def with_relative_sd(profiles, relative_sd: float):
    """``profiles`` with every length term's relative sd replaced (batch times then drawn with
    it); a profile without a length term is left as it is."""
    models = {}
    for alias, profile in profiles.models.items():
        curves = {tokens: dataclasses.replace(curve, length=dataclasses.replace(
                      curve.length, relative_sd=relative_sd)) if curve.length else curve
                  for tokens, curve in profile.curves.items()}
        models[alias] = dataclasses.replace(profile, curves=curves)
    return dataclasses.replace(profiles, models=models)


def replay(schedule, served, strategy: str, profiles, cfg, seeds: int) -> list[tuple[float, float]]:
    """(SLA attainment, mean latency of completed requests) of each jitter seed's replay."""
    from sincere.scheduling.strategies import make_strategy
    from sincere.simulation.simulator import simulate

    figures = []
    for seed in range(seeds):
        outcome = simulate(schedule, make_strategy(strategy), profiles, cfg.SLA_S,
                           cfg.MAX_NEW_TOKENS, cfg.DURATION_S, seed=seed, jitter=True,
                           served_tokens=served)
        requests = [r.row() for r in outcome.requests]
        met = sum(1 for r in requests if r["sla_met"] is True)
        latencies = [r["latency_s"] for r in requests if r["status"] == "ok"]
        figures.append((met / len(requests) if requests else 0.0,
                        statistics.mean(latencies) if latencies else float("nan")))
    return figures


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    from sincere.assets.architectures import DEFAULT_MODEL_MIX
    from sincere.assets.workloads import read_workloads
    from sincere.profiles.length_term import prompt_token_counts, served_prompt_tokens
    from sincere.profiles.profile_set import load_profiles
    from sincere.traffic.schedule import build_schedule

    profiles = load_profiles(cfg.PROFILES, Path(cfg.PROFILES_DIR))
    mix = dict(DEFAULT_MODEL_MIX)
    counts = prompt_token_counts(read_workloads(Path(cfg.WORKLOADS_DIR)), list(mix),
                                 Path(cfg.MODELS_DIR))
    schedule = build_schedule(cfg.PATTERN, cfg.MEAN_RPS, cfg.DURATION_S, cfg.SEED, mix,
                              prompt_ids=sorted(next(iter(counts.values()))))
    served = served_prompt_tokens(schedule.models, schedule.prompt_ids, counts)
    print(f"{cfg.PATTERN} at {cfg.MEAN_RPS:g} requests/s, SLA {cfg.SLA_S:g} s, "
          f"{cfg.DURATION_S:g} s, seed {cfg.SEED}: {len(schedule)} arrivals, each cell replayed "
          f"with {cfg.SEEDS} jitter seeds")
    print(f"{'strategy':<18} {'batch time sd':>13} {'SLA mean':>9} {'SLA sd':>7} {'SLA min':>8} "
          f"{'SLA max':>8} {'latency mean':>13} {'latency min-max':>16}")
    spreads = [("profile's", profiles)] + [(f"{sd:g}", with_relative_sd(profiles, sd))
                                          for sd in cfg.RELATIVE_SDS]
    for strategy in cfg.STRATEGIES:
        for label, varied in spreads:
            figures = replay(schedule, served, strategy, varied, cfg, cfg.SEEDS)
            sla = [100 * s for s, _ in figures]
            latency = [lat for _, lat in figures]
            print(f"{strategy:<18} {label:>13} {statistics.mean(sla):>8.1f}% "
                  f"{statistics.pstdev(sla):>7.1f} {min(sla):>7.1f}% {max(sla):>7.1f}% "
                  f"{statistics.mean(latency):>12.2f}s "
                  f"{min(latency):>7.2f}-{max(latency):.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
