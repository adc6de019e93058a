"""What the profilers share: the profiles' columns, the load-time loop, one measured batch, the
batch-size sweep and the best-batch summary (SPEC section 3); file names and CSV writing are in
``sincere.profiles.files``.

``profiling_models.py`` times loads and unloads; ``profiling_batch_flask.py`` measures batches
that ``profiling_batch_calls.py`` asks for; ``benchmarks/gpu_profile_check.py`` does both in one
process. They write the same files, which ``sincere.profiles.profile_set.load_profiles`` reads. Only
counts, lengths and times are ever recorded: never prompt or generated text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sincere.files import CsvWriter, csv_cell
from sincere.profiles.files import format_table, mean_std
from sincere.schemas import BATCH_PROFILE_COLUMNS, LOADING_PROFILE_COLUMNS

# Loading profile columns beyond SPEC's: the path the server's loads take (load_mean_s is that
# path), each path's own figures, the copy mode of host-cache swaps and why it was chosen
# (sincere.engine.load_paths), and the one-off pinning of the host copy, apart from any load.
LOADING_EXTRA_COLUMNS = ["load_path", "disk_load_mean_s", "disk_load_std_s", "cache_load_mean_s",
                         "cache_load_std_s", "copy_mode", "load_path_reason", "host_pin_s",
                         "host_pinned_gb", "host_pin_how", "source"]
LOADING_COLUMNS = LOADING_PROFILE_COLUMNS + LOADING_EXTRA_COLUMNS

# Monitor column -> the mean reading over a batch, as the batch profile names it.
MONITOR_MEAN_COLUMNS = {"gpu_util_pct": "gpu_util_mean_pct",
                        "gpu_mem_util_pct": "gpu_mem_util_mean_pct",
                        "gpu_power_w": "gpu_power_mean_w", "cpu_pct": "cpu_mean_pct"}
# prompt_tokens_max: the batch's longest prompt, which its time follows
# (sincere.profiles.length_term).
BATCH_EXTRA_COLUMNS = ["prompt_tokens_max", *MONITOR_MEAN_COLUMNS.values(), "retries", "failed",
                       "source"]
BATCH_COLUMNS = BATCH_PROFILE_COLUMNS + BATCH_EXTRA_COLUMNS

BEST_BATCH_COLUMNS = ["model", "best_batch", "best_throughput_rps", "largest_batch",
                      "oom_batch", "max_new_tokens"]

# The original study's batch sizes: powers of two and primes up to 2048.
ORIGINAL_BATCH_SIZES = [1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 19, 23, 29, 32, 36, 41, 48, 53, 56, 60,
                        64, 68, 72, 79, 83, 86, 89, 94, 100, 105, 109, 112, 120, 128, 136, 149,
                        167, 191, 211, 233, 256, 307, 353, 409, 457, 512, 1024, 2048]

# --- load and unload times ------------------------------------------------------------------

class LoadingEngine(Protocol):
    """What the load-time loop needs of ``sincere.engine.engine.Engine``."""

    host_cache: bool

    def load(self, alias: str) -> Any: ...
    def unload(self) -> float: ...
    def prefetch(self, alias: str) -> float: ...
    def pinning(self, alias: str) -> Any: ...
    def evict(self, alias: str) -> None: ...


@dataclass
class LoadTimings:
    """Seconds of each load path and of the unloads that followed, for one model."""

    alias: str
    size_gb: float = 0.0
    disk_s: list[float] = field(default_factory=list)
    cache_s: list[float] = field(default_factory=list)
    disk_unload_s: list[float] = field(default_factory=list)
    cache_unload_s: list[float] = field(default_factory=list)
    pinning: Any = None  # the host copy's sincere.engine.weights.PinReport


def time_loading(disk_engine: LoadingEngine, cache_engine: LoadingEngine, alias: str,
                 iterations: int, warmup: int = 1,
                 log: Callable[[str], None] = print) -> LoadTimings:
    """Time ``iterations`` loads of ``alias`` from disk and from the host cache, alternating.

    ``disk_engine`` keeps no host cache (a load is ``from_pretrained`` then a copy to the
    device, as the original study's server did); ``cache_engine`` keeps one (a load is a copy
    from host RAM, the swap the server makes). Each load is followed by an unload, so one model
    is on the device at a time. Each load is timed from this side of the call, as the server
    times its swaps: an engine in a process of its own (sincere.engine.process) adds a round
    trip, which the server's swaps pay too. An unload is the engine's own seconds: the server's
    swap unloads and loads in one call (``Engine.swap``), so a swap, U + L, pays one round trip.
    ``warmup`` rounds go first, unrecorded; the host copy is evicted at the end.
    """
    if disk_engine.host_cache or not cache_engine.host_cache:
        raise ValueError("time_loading needs a disk engine without and a cache engine with a "
                         "host cache")
    timings = LoadTimings(alias)
    cache_engine.prefetch(alias)
    timings.pinning = cache_engine.pinning(alias)
    for round_number in range(warmup + iterations):
        recorded = round_number >= warmup
        disk, disk_s = _timed(disk_engine.load, alias)
        disk_unload_s = disk_engine.unload()
        cached, cached_s = _timed(cache_engine.load, alias)
        cache_unload_s = cache_engine.unload()
        if cached.path != "host_cache":
            raise RuntimeError(f"{alias}: expected a load from the host cache, got {cached.path}")
        timings.size_gb = float(cached.size_gb)
        if recorded:
            timings.disk_s.append(disk_s)
            timings.cache_s.append(cached_s)
            timings.disk_unload_s.append(disk_unload_s)
            timings.cache_unload_s.append(cache_unload_s)
        label = f"round {round_number - warmup + 1}" if recorded else "warm-up"
        log(f"  {alias} {label}: disk {disk_s:.3f} s, host cache {cached_s:.3f} s, "
            f"unload {cache_unload_s:.3f} s")
    cache_engine.evict(alias)
    return timings


def _timed(call: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``call(*args)`` and its wall seconds as the caller sees them."""
    start = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - start


def cache_path_name(device: str, copy_mode: str) -> str:
    """The name of the host-cache load path: ``host_cache`` on a CPU, on a GPU
    ``host_cache_<copy mode>`` (pinned, pageable or chunked: sincere.engine.weights.COPY_MODES)."""
    if device == "cpu":
        return "host_cache"
    return f"host_cache_{copy_mode}"


def loading_row(timings: LoadTimings, *, dtype: str, device: str, cc_mode: str,
                server_path: str, source: str, copy_mode: str = "",
                reason: str = "") -> dict[str, Any]:
    """One model_loading_times row; ``load_mean_s`` is ``server_path``'s (a host_cache* path, or
    ``disk_from_pretrained``); ``copy_mode`` and ``reason`` say how host-cache swaps copy."""
    disk_mean, disk_std = mean_std(timings.disk_s)
    cache_mean, cache_std = mean_std(timings.cache_s)
    from_cache = server_path.startswith("host_cache")
    unloads = timings.cache_unload_s if from_cache else timings.disk_unload_s
    unload_mean, unload_std = mean_std(unloads)
    return {
        "model": timings.alias, "size_gb": round(timings.size_gb, 4), "dtype": dtype,
        "load_mean_s": cache_mean if from_cache else disk_mean,
        "load_std_s": cache_std if from_cache else disk_std,
        "unload_mean_s": unload_mean, "unload_std_s": unload_std,
        "iterations": len(timings.cache_s), "device": device, "cc_mode": cc_mode,
        "load_path": server_path, "disk_load_mean_s": disk_mean, "disk_load_std_s": disk_std,
        "cache_load_mean_s": cache_mean, "cache_load_std_s": cache_std,
        "copy_mode": copy_mode, "load_path_reason": reason,
        "host_pin_s": timings.pinning.seconds if timings.pinning else None,
        "host_pinned_gb": timings.pinning.nbytes / 1e9 if timings.pinning else None,
        "host_pin_how": timings.pinning.how if timings.pinning else None, "source": source,
    }


# --- one batch ------------------------------------------------------------------------------

class BatchFailed(RuntimeError):
    """A profiled batch lost prompts to something other than out-of-memory (class names only)."""


class BatchEngine(Protocol):
    """What a measured batch needs of ``sincere.engine.engine.Engine``."""

    def generate(self, prompts: list[str], max_new_tokens: int | None = None) -> Any: ...


class Sampler(Protocol):
    """What a measured batch needs of ``sincere.host.monitor.Monitor``."""

    def sample_once(self) -> dict[str, Any]: ...
    def means(self, since_t_s: float | None = None,
              until_t_s: float | None = None) -> dict[str, float | None]: ...


def measure_batch(engine: BatchEngine, prompts: list[str], max_new_tokens: int,
                  monitor: Sampler | None = None,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Run one batch and return its figures (no text): time, throughput, tokens, peak memory,
    whether it hit out-of-memory at full size, and the monitor's means during it.

    Raises BatchFailed when prompts failed for another reason than out-of-memory: such a batch
    measures nothing, and a sweep must not mistake it for the memory limit.
    """
    first = monitor.sample_once() if monitor is not None else None
    # Timed around the call, as the server times a batch (its engine may be in another process).
    started_s = clock()
    result = engine.generate(prompts, max_new_tokens=max_new_tokens)
    seconds = clock() - started_s
    last = monitor.sample_once() if monitor is not None else None
    other_errors = result.other_errors
    if other_errors:
        raise BatchFailed(f"{len(result.failed)} of {len(prompts)} prompts failed: "
                          f"{', '.join(other_errors)}")
    completed = len(prompts) - len(result.failed)
    measurement: dict[str, Any] = {
        "batch_size": len(prompts),
        "max_new_tokens": max_new_tokens,
        "processing_time_s": seconds,
        "throughput_rps": completed / seconds if seconds > 0 else None,
        "output_tokens_per_s": sum(result.output_tokens) / seconds if seconds > 0 else None,
        "prompt_tokens_mean": (sum(result.prompt_tokens) / len(result.prompt_tokens)
                               if result.prompt_tokens else None),
        "prompt_tokens_max": max(result.prompt_tokens) if result.prompt_tokens else None,
        "peak_gpu_mem_gib": result.peak_mem_gib,
        "oom": bool(result.out_of_memory),
        "retries": int(result.retries),
        "failed": len(result.failed),
        "errors": sorted(set(result.errors)),
    }
    means = monitor.means(first["t_s"], last["t_s"]) if monitor is not None else {}
    for column, mean_column in MONITOR_MEAN_COLUMNS.items():
        measurement[mean_column] = means.get(column)
    return measurement


# --- the batch-size sweep -------------------------------------------------------------------

ProfileFn = Callable[[str, int, int], Mapping[str, Any]]  # (model, batch size, run) -> figures


@dataclass
class SweepOutcome:
    """How one model's sweep ended."""

    model: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str = "sizes"  # sizes, max_batch, oom, time_limit or error
    error: str = ""


def sweep_sizes(batch_sizes: Iterable[int], max_batch: int) -> list[int]:
    """The batch sizes to try, ascending, up to ``max_batch`` (0 = no bound)."""
    sizes = sorted({int(b) for b in batch_sizes if int(b) >= 1})
    return [b for b in sizes if max_batch <= 0 or b <= max_batch]


def sweep_model(profile: ProfileFn, model: str, sizes: Sequence[int], runs: int,
                max_new_tokens: int, source: str, on_row: Callable[[dict[str, Any]], None],
                deadline: float | None = None, warmup: int = 1, warm_each_size: bool = False,
                clock: Callable[[], float] = time.monotonic,
                log: Callable[[str], None] = print) -> SweepOutcome:
    """Profile ``model`` at each size in ascending order, ``runs`` runs each.

    The sweep stops at the first run that hits out-of-memory (its row is kept, with oom true),
    after the last size, or, before starting a new size, once ``deadline`` (on ``clock``) has
    passed. ``warmup`` unrecorded batches at the smallest size go first; with
    ``warm_each_size`` one more before each size's runs (a compiled engine compiles for each
    new shape on its first batch, which must not count as a batch time). Each row goes to
    ``on_row`` as soon as it is measured. An exception from ``profile`` ends the sweep with
    ``stopped_by = "error"``.
    """
    outcome = SweepOutcome(model)
    try:
        for _ in range(warmup if sizes else 0):
            profile(model, sizes[0], 0)
        for size in sizes:
            if deadline is not None and outcome.rows and clock() >= deadline:
                outcome.stopped_by = "time_limit"
                return outcome
            if warm_each_size:
                profile(model, size, 0)
            for run in range(1, runs + 1):
                figures = profile(model, size, run)
                row = {**figures, "model": model, "batch_size": size, "run": run,
                       "max_new_tokens": figures.get("max_new_tokens", max_new_tokens),
                       "source": source}
                outcome.rows.append(row)
                on_row(row)
                log(f"  {model} batch {size:>5} run {run}: {csv_cell(row['processing_time_s'])} s, "
                    f"{csv_cell(row['throughput_rps'])} req/s"
                    + ("  OUT OF MEMORY" if row["oom"] else ""))
                if row["oom"]:
                    outcome.stopped_by = "oom"
                    return outcome
    except Exception as exc:  # noqa: BLE001 - the caller reports it and goes on to the next model
        outcome.stopped_by = "error"
        outcome.error = f"{type(exc).__name__}: {exc}"[:300]
    return outcome


def run_sweeps(profile: ProfileFn, models: Sequence[str], sizes: Sequence[int], runs: int,
               max_new_tokens: int, source: str, batch_path: Path, best_path: Path,
               time_limit_s: float = 0.0, warmup: int = 1, warm_each_size: bool = False,
               clock: Callable[[], float] = time.monotonic,
               log: Callable[[str], None] = print) -> tuple[list[SweepOutcome], list[dict]]:
    """Sweep each model in turn: rows go to ``batch_path`` as they are measured, and the
    best-batch summary to ``best_path`` at the end (also when interrupted). Each model gets an
    equal share of what is left of ``time_limit_s`` (0 = no limit), and at least one size.
    Each row's line ends with the minutes the sweep has left by its limit."""
    end = clock() + time_limit_s if time_limit_s > 0 else None

    def row_log(line: str) -> None:
        log(line if end is None else
            f"{line}  ({_minutes(end - clock())} left of the time limit)")
    outcomes: list[SweepOutcome] = []
    summary: list[dict[str, Any]] = []
    with CsvWriter(batch_path, BATCH_COLUMNS) as writer:
        try:
            for index, model in enumerate(models):
                deadline = (None if end is None else
                            clock() + (end - clock()) / (len(models) - index))
                log(f"  {model}: sizes {sizes[0]}..{sizes[-1]}" * bool(sizes) + (
                    "" if deadline is None else
                    f", no new size after {_minutes(deadline - clock())} (its share)"))
                outcome = sweep_model(profile, model, sizes, runs, max_new_tokens, source,
                                      writer.write, deadline=deadline, warmup=warmup,
                                      warm_each_size=warm_each_size, clock=clock, log=row_log)
                outcomes.append(outcome)
                log(f"  {model}: stopped by an error: {outcome.error}"
                    if outcome.stopped_by == "error" else
                    f"  {model}: {len(outcome.rows)} rows, stopped by {outcome.stopped_by}")
        finally:
            summary = best_batches([row for o in outcomes for row in o.rows])
            with CsvWriter(best_path, BEST_BATCH_COLUMNS) as best_writer:
                for entry in summary:
                    best_writer.write(entry)
    return outcomes, summary


def _minutes(seconds: float) -> str:
    """``151 min`` for a sweep's time left; ``45 s`` under two minutes."""
    seconds = max(0.0, seconds)
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def report_sweeps(outcomes: Iterable[SweepOutcome], summary: Sequence[Mapping[str, Any]],
                  log: Callable[[str], None] = print) -> int:
    """Log the best-batch table; the exit status: 1 (naming them on stderr) when a model's
    sweep ended in an error or left no batch that fit in memory, else 0."""
    log(format_table(summary, BEST_BATCH_COLUMNS))
    fitted = {entry["model"] for entry in summary if entry["largest_batch"] is not None}
    failed = [o.model for o in outcomes if o.stopped_by == "error" or o.model not in fitted]
    if failed:
        print(f"no usable profile for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def draw_prompt_ids(all_ids: Sequence[str], batch_size: int, seed: int) -> list[str]:
    """``batch_size`` prompt ids drawn from ``all_ids`` (without replacement while they last);
    the same (seed, batch size) draws the same prompts."""
    import numpy as np

    rng = np.random.default_rng([seed, batch_size])
    picks = rng.choice(len(all_ids), size=batch_size, replace=batch_size > len(all_ids))
    return [all_ids[i] for i in picks]


def best_batches(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model and max_new_tokens: the batch size of highest mean throughput, the largest size
    that fit, and the first size that hit out-of-memory (empty if none did)."""
    fitted: dict[tuple[str, int], dict[int, list[float]]] = {}
    oom_at: dict[tuple[str, int], int] = {}
    for row in rows:
        key = (str(row["model"]), int(row["max_new_tokens"]))
        by_size = fitted.setdefault(key, {})
        size = int(row["batch_size"])
        if _truthy(row.get("oom")):
            oom_at[key] = min(oom_at.get(key, size), size)
        else:
            by_size.setdefault(size, []).append(float(row["throughput_rps"]))
    summary = []
    for (model, tokens), by_size in fitted.items():
        mean_rps = {b: sum(v) / len(v) for b, v in by_size.items()}
        best = min(mean_rps, key=lambda b: (-mean_rps[b], b)) if mean_rps else None
        summary.append({
            "model": model, "best_batch": best,
            "best_throughput_rps": round(mean_rps[best], 4) if best is not None else None,
            "largest_batch": max(mean_rps) if mean_rps else None,
            "oom_batch": oom_at.get((model, tokens)), "max_new_tokens": tokens})
    return summary


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}
