"""How steadily this machine runs the same batch: the floor under any profile's prediction.

    python benchmarks/bench_machine_drift.py                  # llama3-8b, best batch, 3 minutes
    python benchmarks/bench_machine_drift.py --minutes 10 --window-s 30

A profile is measured once and a run follows minutes (or, with a kept profile, hours) later; if
the machine itself runs the same batch faster or slower from one minute to the next, no profile
can predict a run better than that. This benchmark starts the engine as the server runs it (its
own process, its own cores: sincere.engine.process), loads MODEL and times the very same batch
(the profile's best batch B, the same B prompts) back to back for MINUTES. It reports, per
WINDOW_S window, the median batch time as a ratio to the first window's (the baseline, from the
same run), and the spread: the slowest window's median over the fastest's. On a dedicated
machine the ratios stay within a percent or two; on a shared virtual machine they need not.
Needs the tiny models, workloads and a profile of this machine (run_pipeline.sh's first three
stages).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere.cli import parse_constants  # noqa: E402

MODEL = "llama3-8b"  # the model of the batch
MINUTES = 3.0  # how long to time the batch, back to back
WINDOW_S = 20.0  # one median per window of this many seconds
MAX_NEW_TOKENS = 50  # new tokens per request
MODELS_DIR = "models"  # tiny models (download_models.py --random --tiny)
WORKLOADS_DIR = "workloads"  # prompts (generate_workloads_jsonl.py --synthetic 500)
PROFILES = "cpu_noncc"  # profile set of this machine (run_profiling.sh): gives the batch size
PROFILES_DIR = "profiling_results"  # folder of the profile CSVs
SEED = 1  # which prompts make the batch (sincere.profiles.profiling.draw_prompt_ids)


def window_medians(times: list[tuple[float, float]], window_s: float,
                   elapsed_s: float) -> list[float]:
    """(start offset, seconds) of each batch -> the median seconds of each window that the
    ``elapsed_s`` of timing filled (the first at least)."""
    full = max(1, int(elapsed_s // window_s))
    windows: dict[int, list[float]] = {}
    for offset_s, seconds in times:
        if int(offset_s // window_s) < full:
            windows.setdefault(int(offset_s // window_s), []).append(seconds)
    return [statistics.median(windows[k]) for k in sorted(windows)]


def time_back_to_back(run_batch: Callable[[], object], duration_s: float,
                      clock: Callable[[], float] = time.perf_counter
                      ) -> tuple[list[tuple[float, float]], float]:
    """Run ``run_batch`` again and again until ``duration_s`` has passed on ``clock``: the
    (start offset, seconds) of each batch, and the seconds the timing took in all."""
    times: list[tuple[float, float]] = []
    started = clock()
    while (begin := clock()) - started < duration_s:
        run_batch()
        times.append((begin - started, clock() - begin))
    return times, clock() - started


def main(argv: list[str] | None = None,
         clock: Callable[[], float] = time.perf_counter) -> int:
    """Time the batch for MINUTES and print each window's median against the first; ``clock``
    times the batches (a test passes a fake one)."""
    cfg = parse_constants(globals(), argv)
    from sincere.assets.workloads import read_workloads
    from sincere.engine.process import start_engine
    from sincere.profiles.profile_set import load_profiles
    from sincere.profiles.profiling import draw_prompt_ids

    profiles = load_profiles(cfg.PROFILES, Path(cfg.PROFILES_DIR))
    size = profiles[MODEL].best_batch(cfg.MAX_NEW_TOKENS)
    workloads = read_workloads(Path(cfg.WORKLOADS_DIR))
    prompts = [workloads[i] for i in draw_prompt_ids(sorted(workloads), size, cfg.SEED)]
    engine = start_engine(True, dict(models_dir=Path(cfg.MODELS_DIR).resolve(),
                                     max_new_tokens=cfg.MAX_NEW_TOKENS), pin=True)
    try:
        engine.load(MODEL)
        engine.generate(prompts)  # warm-up, untimed
        print(f"{MODEL}: batch of {size} timed back to back for {cfg.MINUTES:g} min "
              f"(engine on cores {engine.cores['engine'] if engine.cores else 'any'})")
        times, elapsed_s = time_back_to_back(lambda: engine.generate(prompts),
                                             60.0 * cfg.MINUTES, clock)
    finally:
        engine.close()
    medians = window_medians(times, cfg.WINDOW_S, elapsed_s)
    baseline = medians[0]
    print(f"{'window':>8} {'median (s)':>11} {'vs first':>9}")
    for k, median in enumerate(medians):
        print(f"{k * cfg.WINDOW_S:>7.0f}s {median:>11.4f} {median / baseline:>9.3f}")
    print(f"{len(times)} batches; spread (slowest window / fastest): "
          f"{max(medians) / min(medians):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
