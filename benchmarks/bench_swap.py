"""A swap from the host-RAM cache against a load from disk, for each model, in the same run.

    python benchmarks/bench_swap.py                                # models/ on cuda, else cpu
    python benchmarks/bench_swap.py --models-dir /tmp/m --rounds 10

For each model, ROUNDS rounds (after WARMUP untimed ones), one load per path and round, each
followed by an unload: ``disk`` is ``from_pretrained`` and a copy to the device (into owned
memory on a CPU), what a server without a cache pays on every swap; ``host_cache`` copies the
weights the engine keeps in host RAM (pinned on a GPU with CC off), the swap the server makes;
on a GPU ``host_cache_pageable`` times the same copy from pageable memory, as under CC. The
files are in the page cache after the warm-up, so ``disk`` is a best case. Prints one table
(mean and sample std in seconds, and the ratio disk / host cache); writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere.cli import parse_constants  # noqa: E402

MODELS_DIR = "models"  # folder of model subfolders (download_models.py)
MODELS = []  # aliases to time (empty = every model in MODELS_DIR)
ROUNDS = 10  # timed rounds per model and path
WARMUP = 1  # untimed rounds first (imports, page cache, allocator)
DEVICE = ""  # torch device ("" = cuda when there is one, else cpu)
PAGEABLE = True  # on a GPU, also time the cache in pageable host memory (as under CC)


def time_paths(engines: dict, alias: str, rounds: int,
               warmup: int) -> tuple[dict[str, list[float]], float]:
    """Load seconds of each path (and ``<path>_unload`` seconds after them), one load per path per
    round, the paths interleaved so that drift on the machine hits them alike; and the size of
    the weights in GB."""
    for engine in engines.values():
        if engine.host_cache:
            engine.prefetch(alias)
    seconds: dict[str, list[float]] = {key: [] for name in engines
                                       for key in (name, f"{name}_unload")}
    for round_number in range(warmup + rounds):
        for name, engine in engines.items():
            loaded = engine.load(alias)
            unload_s = engine.unload()
            expected = "host_cache" if engine.host_cache else "disk"
            if loaded.path != expected:
                raise RuntimeError(f"{alias}: {name} loaded from {loaded.path}")
            size_gb = loaded.size_gb
            if round_number >= warmup:
                seconds[name].append(loaded.seconds)
                seconds[f"{name}_unload"].append(unload_s)
    for engine in engines.values():
        engine.evict(alias)
    return seconds, size_gb


def table_row(alias: str, size_gb: float, seconds: dict[str, list[float]]) -> dict[str, object]:
    """One model's line: mean and sample std of each path's seconds (4 decimals), and the
    ratio of the disk path's mean to the host cache's (2 decimals)."""
    from sincere.profiles.files import mean_std

    row: dict[str, object] = {"model": alias, "size_gb": size_gb}
    for name, values in seconds.items():
        mean, std = mean_std(values)
        row[f"{name}_mean_s"], row[f"{name}_std_s"] = round(mean, 4), round(std, 4)
    row["disk/cache"] = round(row["disk_mean_s"] / row["host_cache_mean_s"], 2)
    return row


def main(argv: list[str] | None = None) -> int:
    """Time every model's paths and print the table."""
    cfg = parse_constants(globals(), argv)
    from sincere.engine.engine import Engine
    from sincere.profiles.files import format_table

    device = cfg.DEVICE or None
    engines = {"disk": Engine(Path(cfg.MODELS_DIR), device=device, host_cache=False),
               "host_cache": Engine(Path(cfg.MODELS_DIR), device=device, host_cache=True)}
    first = engines["disk"]
    if first.is_cuda and cfg.PAGEABLE:
        engines["host_cache_pageable"] = Engine(Path(cfg.MODELS_DIR), device=device,
                                                host_cache=True, copy_mode="pageable")
    aliases = list(cfg.MODELS) or first.available_models()
    if not aliases or cfg.ROUNDS < 1:
        print(f"nothing to time: no models in {cfg.MODELS_DIR} (run download_models.py), or "
              f"ROUNDS < 1", file=sys.stderr)
        return 2
    print(f"{len(aliases)} models on {first.device} ({str(first.dtype).removeprefix('torch.')}),"
          f" {cfg.ROUNDS} rounds after {cfg.WARMUP} warm-up", flush=True)
    rows = []
    for alias in aliases:
        seconds, size_gb = time_paths(engines, alias, cfg.ROUNDS, cfg.WARMUP)
        row = table_row(alias, size_gb, seconds)
        rows.append(row)
        print(f"  {alias}: disk {row['disk_mean_s']} s, host cache {row['host_cache_mean_s']} s",
              flush=True)
    print(format_table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
