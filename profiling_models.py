"""Time model loads and unloads -> profiling_results/model_loading_times_<device>_<cc|noncc>_*.csv.

For each model, ITERATIONS rounds of: a load from disk (``from_pretrained`` and a copy to the
device, no host cache), an unload, a load from the host-RAM cache (the copy a swap makes in the
server, in the copy mode timed fastest here on the first model: COPY_MODE), an unload. One row
per model with the mean and std of each path; ``load_mean_s`` / ``load_std_s`` are those of the
path the server uses (``load_path``), ``load_path_reason`` says why that copy mode. The engine of
the server's path runs as the server runs it (ENGINE_PROCESS, PIN_CORES) and every load and
unload is timed from this side of the call, as the server times its swaps.
"""

import csv
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sincere.cli import parse_constants

MODELS_DIR = "models"  # folder of model subfolders and manifest.csv (download_models.py)
MODELS = []  # aliases to profile (empty = every model in MODELS_DIR's manifest)
ITERATIONS = 5  # timed rounds per model (each: disk load, unload, host-cache load, unload)
WARMUP = 1  # untimed rounds per model before the timed ones
PROFILES_DIR = "profiling_results"  # where the CSV goes
DEVICE = ""  # torch device ("" = cuda when there is one, else cpu)
CPU_THREADS = 0  # torch threads on a CPU device (0 = all cores but one, as the server's default)
DEVICE_NAME = ""  # device part of the file name ("" = cpu, or the GPU's short name, e.g. h100)
DECODE = "eager"  # the engine the batch profile is for (eager or static): names the profile set
HOST_CACHE = True  # the server keeps host copies: load_mean_s is the host-cache path (false: disk)
COPY_MODE = "auto"  # host-cache swaps: auto (fastest of pinned, pageable, chunked), or one of them
LOAD_PATH_ROUNDS = 3  # auto: timed swaps per copy mode, on the first model
ENGINE_PROCESS = True  # the server's path in an engine process of its own, as the server runs it
PIN_CORES = True  # split the cores between this process and the engine's, as the server does


def manifest_aliases(models_dir: Path) -> list[str]:
    """The aliases listed in ``models_dir/manifest.csv`` (empty when there is none)."""
    manifest = models_dir / "manifest.csv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as handle:
        return [row["alias"] for row in csv.DictReader(handle) if row.get("alias")]


def profile_loading(models_dir: Path, aliases: list[str], profiles_dir: Path,
                    env: dict[str, Any], iterations: int, warmup: int = 1,
                    device: str | None = None, device_label: str = "", host_cache: bool = True,
                    decode: str = "eager", copy_mode: str = "auto", path_rounds: int = 3,
                    engine_process: bool = False, pin_cores: bool = False, cpu_threads: int = 0,
                    log: Callable[[str], None] = print) -> Path:
    """Time each model's loads and unloads (all of ``models_dir``'s when ``aliases`` is empty)
    and write the model_loading_times CSV; its path. ``env`` is an environment block
    (sincere.host.environment) naming the hardware and the CC mode. The host-cache copy mode is
    ``copy_mode``, or with "auto" the fastest on this machine, timed on the first model
    (sincere.engine.load_paths). The engine of the server's path (the host cache's, or the disk's
    without ``host_cache``) runs in a process of its own with ``engine_process``, on its own
    cores with ``pin_cores``, as the server's does. ValueError for a missing model."""
    from sincere.engine.engine import Engine
    from sincere.engine.load_paths import choose_load_path
    from sincere.engine.process import start_engine

    cc_mode = env.get("cc_mode", "unknown")
    probe_engine = Engine(models_dir, device=device, host_cache=False, cc_mode=cc_mode)
    available = probe_engine.available_models()
    aliases = list(aliases) or manifest_aliases(models_dir) or available
    missing = [a for a in aliases if a not in available]
    if missing or not aliases:
        raise ValueError(f"no model folder for {', '.join(missing) or 'any model'} in "
                         f"{models_dir}; run download_models.py first (have: "
                         f"{', '.join(available) or 'none'})")
    device_type = probe_engine.device.type
    reason = f"set by COPY_MODE={copy_mode}"
    if copy_mode == "auto":
        log(f"timing the copy modes of host-cache swaps on {aliases[0]}")
        probe = Engine(models_dir, device=device, host_cache=True, copy_mode="pageable")
        choice = choose_load_path(probe, aliases[0], path_rounds, log=log)
        copy_mode, reason = choice.mode, choice.reason
        log(f"  copy mode: {reason}")
    # The engine of the server's path in the server's layout; the other path's in this process.
    disk_kwargs = dict(models_dir=models_dir, device=device, host_cache=False, cc_mode=cc_mode)
    cache_kwargs = {**disk_kwargs, "host_cache": True, "copy_mode": copy_mode}
    disk_engine = (probe_engine if host_cache
                   else start_engine(engine_process, disk_kwargs, cpu_threads, pin=pin_cores))
    cache_engine = (start_engine(engine_process, cache_kwargs, cpu_threads, pin=pin_cores)
                    if host_cache else Engine(**cache_kwargs))
    try:
        return _write_loading(disk_engine, cache_engine, aliases, profiles_dir, env, iterations,
                              warmup, device_type, device_label, host_cache, decode, copy_mode,
                              reason, log)
    finally:
        for engine in (disk_engine, cache_engine):
            if hasattr(engine, "close"):
                engine.close()


def _write_loading(disk_engine: Any, cache_engine: Any, aliases: list[str], profiles_dir: Path,
                   env: dict[str, Any], iterations: int, warmup: int, device_type: str,
                   device_label: str, host_cache: bool, decode: str, copy_mode: str,
                   reason: str, log: Callable[[str], None]) -> Path:
    """Time every alias's loads with the two engines and write the CSV; its path."""
    from sincere.files import CsvWriter
    from sincere.profiles.files import (
        device_name,
        format_table,
        hardware_name,
        measured_source,
        profile_path,
        timestamp,
    )
    from sincere.profiles.profiling import (
        LOADING_COLUMNS,
        cache_path_name,
        loading_row,
        time_loading,
    )

    cc_mode = env.get("cc_mode", "unknown")
    name = device_label or device_name(env, device_type, decode)
    server_path = (cache_path_name(device_type, cache_engine.copy_mode) if host_cache
                   else "disk_from_pretrained")
    dtype = str(disk_engine.dtype).removeprefix("torch.")
    source = measured_source(hardware_name(env))
    out_path = profile_path(profiles_dir, "model_loading_times", name, cc_mode, timestamp())
    log(f"profiling loads of {', '.join(aliases)} on {hardware_name(env)} ({device_type}, "
        f"{dtype}, cc_mode {cc_mode}): {iterations} rounds each, server path {server_path}")
    rows = []
    with CsvWriter(out_path, LOADING_COLUMNS) as writer:
        for alias in aliases:
            timings = time_loading(disk_engine, cache_engine, alias, iterations, warmup=warmup,
                                   log=log)
            row = loading_row(timings, dtype=dtype, device=name, cc_mode=cc_mode,
                              server_path=server_path, source=source, copy_mode=copy_mode,
                              reason=reason)
            writer.write(row)
            rows.append(row)
    log(format_table(rows, ["model", "size_gb", "load_path", "load_mean_s", "load_std_s",
                            "disk_load_mean_s", "unload_mean_s", "host_pin_s"]))
    log(f"wrote {out_path}")
    return out_path


def main(argv: list[str] | None = None) -> int:
    """Time every model's loads and unloads and write one CSV row per model."""
    cfg = parse_constants(globals(), argv)
    import torch

    from sincere.engine.engine import set_cpu_threads  # after parsing: --help stays instant
    from sincere.host.environment import environment_block

    if (cfg.DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu":
        set_cpu_threads(cfg.CPU_THREADS)
    try:
        profile_loading(Path(cfg.MODELS_DIR), list(cfg.MODELS), Path(cfg.PROFILES_DIR),
                        environment_block(), cfg.ITERATIONS, warmup=cfg.WARMUP,
                        device=cfg.DEVICE or None, device_label=cfg.DEVICE_NAME,
                        decode=cfg.DECODE, host_cache=cfg.HOST_CACHE,
                        copy_mode=cfg.COPY_MODE, path_rounds=cfg.LOAD_PATH_ROUNDS,
                        engine_process=cfg.ENGINE_PROCESS, pin_cores=cfg.PIN_CORES,
                        cpu_threads=cfg.CPU_THREADS, log=lambda line: print(line, flush=True))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
