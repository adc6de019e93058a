"""How fast the simulator replays a run: simulated requests per second of wall time.

    python benchmarks/bench_simulator.py                      # the default grid's busiest cell
    python benchmarks/bench_simulator.py --strategy Immediate --mean 8 --repeats 10

One run of the original study's grid (20 minutes of traffic) is replayed REPEATS times on the
shipped profiles; the schedule is built once, outside the timing. The baseline, timed in the
same process, is the bare event loop every discrete-event simulation pays for: the same
arrivals pushed on and popped off a heap, nothing decided. The ratio says what the strategy,
the queues and the records cost on top of it. Prints one table; writes nothing.
"""

from __future__ import annotations

import heapq
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere.assets.architectures import DEFAULT_MODEL_MIX  # noqa: E402
from sincere.cli import parse_constants  # noqa: E402
from sincere.profiles.profile_set import load_profiles  # noqa: E402
from sincere.scheduling.strategies import make_strategy  # noqa: E402
from sincere.simulation.simulator import simulate  # noqa: E402
from sincere.traffic.schedule import build_schedule  # noqa: E402

STRATEGY = "BestBatch+Timer"  # strategy of the run
PATTERN = "gamma"  # traffic pattern of the run
MEAN = 12.0  # mean request rate, requests per second
SLA = 40.0  # SLA, seconds
DURATION_S = 1200.0  # traffic duration, seconds
PROFILES = "h100-orig_noncc"  # profile set in PROFILES_DIR
PROFILES_DIR = "profiling_results"  # folder of the profile CSVs
MAX_NEW_TOKENS = 50  # new tokens per request
SEED = 0  # arrival seed
REPEATS = 5  # timed replays (the median is reported)


def bare_event_loop(times_s: list[float]) -> int:
    """Push every arrival on a heap keyed like the simulator's, pop them all; the floor."""
    heap: list[tuple[float, int, int]] = []
    for seq, t in enumerate(times_s):
        heapq.heappush(heap, (t, 1, seq))
    popped = 0
    while heap:
        heapq.heappop(heap)
        popped += 1
    return popped


def median_seconds(fn, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    root = Path(__file__).resolve().parent.parent
    profiles_dir = Path(cfg.PROFILES_DIR)
    if not profiles_dir.is_absolute() and not profiles_dir.is_dir():
        profiles_dir = root / profiles_dir
    profiles = load_profiles(cfg.PROFILES, profiles_dir)
    schedule = build_schedule(cfg.PATTERN, cfg.MEAN, cfg.DURATION_S, cfg.SEED,
                              DEFAULT_MODEL_MIX)
    strategy = make_strategy(cfg.STRATEGY)
    requests = len(schedule)

    def replay() -> None:
        outcome = simulate(schedule, strategy, profiles, cfg.SLA, cfg.MAX_NEW_TOKENS,
                           cfg.DURATION_S, seed=cfg.SEED)
        assert sum(outcome.accounting[k] for k in ("completed", "unserved")) == requests

    times_s = schedule.scheduled_s.tolist()
    replay()  # warm-up: imports, caches
    sim_s = median_seconds(replay, cfg.REPEATS)
    bare_s = median_seconds(lambda: bare_event_loop(times_s), cfg.REPEATS)
    print(f"{cfg.STRATEGY}, {cfg.PATTERN} at {cfg.MEAN:g} req/s for {cfg.DURATION_S:g} s, "
          f"SLA {cfg.SLA:g} s, profiles {cfg.PROFILES}: {requests} requests, "
          f"median of {cfg.REPEATS}")
    print(f"{'what':<22}{'seconds':>10}{'requests/s of wall time':>26}")
    print(f"{'bare event loop':<22}{bare_s:>10.4f}{requests / bare_s:>26,.0f}")
    print(f"{'simulator':<22}{sim_s:>10.4f}{requests / sim_s:>26,.0f}")
    print(f"simulator / bare event loop: {sim_s / bare_s:.1f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
