"""Profiling on a GPU in one process, no Flask: load paths and a bounded batch sweep.

    python benchmarks/gpu_profile_check.py --models-dir models --profiles-dir $OUT/profiles
    python benchmarks/gpu_profile_check.py --device cpu --models-dir /tmp/m --batch-sizes 1 2 4

Writes what profiling_models.py and run_profiling.sh write (model_loading_times_*,
batch_profiling_* and best_batch_* CSVs), with the same code: profiling_models.profile_loading
for the loads, and sincere.profiles.profiling's sweep calling the engine directly instead of over
HTTP. The batch sizes stop at the first out-of-memory, at the last of BATCH_SIZES, or when
TIME_LIMIT_S is spent (each model gets its share). With ``--device cpu`` the same steps run on the
tiny models: a dry run anywhere. On a GPU it needs the full-size models on disk first
(``download_models.py --random``, 47 GB); benchmarks/gpu_check.py measures without them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere.cli import parse_constants  # noqa: E402

MODELS_DIR = "models"  # folder of model subfolders (download_models.py --random)
MODELS = []  # aliases to profile (empty = every model in MODELS_DIR)
PROFILES_DIR = "profiling_results"  # where the CSVs go
DEVICE = "cuda"  # torch device; "cpu" for a dry run on the tiny models
ITERATIONS = 3  # timed load/unload rounds per model
WARMUP = 1  # untimed load rounds, and untimed batches, before the timed ones
BATCH_SIZES = [1, 8, 32, 64, 128, 256]  # batch sizes, ascending, up to out-of-memory
RUNS = 1  # runs of each batch size
MAX_NEW_TOKENS = 50  # new tokens per prompt
TIME_LIMIT_S = 240.0  # the batch sweep starts no new size after this many seconds (0 = none)
WORKLOADS_DIR = ""  # prompts from this folder ("" = PROMPTS synthetic ones made here)
PROMPTS = 512  # synthetic prompts when WORKLOADS_DIR is empty
SEED = 0  # run r of every size draws its prompts with seed SEED + r
MONITOR_PERIOD_S = 0.5  # CPU/GPU sampling period during the sweep, seconds


def environment(device: str) -> dict[str, Any]:
    """The environment block (GPU, driver, CC mode); a minimal one where psutil is missing."""
    try:
        from sincere.host.environment import environment_block
    except ImportError as exc:  # a bare GPU image may lack psutil: the profiles do not need it
        import torch

        print(f"note: no monitor ({exc}); cc_mode unknown", flush=True)
        gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
        return {"gpu_name": gpu, "cpu_model": None, "cc_mode": "unknown"}
    return environment_block()


def start_monitor(period_s: float) -> Any:
    """A running sincere.host.monitor.Monitor keeping samples in memory, or None without psutil."""
    try:
        from sincere.host.monitor import Monitor
    except ImportError:
        return None
    return Monitor(None, period_s=period_s).start()


def main(argv: list[str] | None = None) -> int:
    """Profile the loads, then sweep the batch sizes of every model; 0 when all are usable."""
    cfg = parse_constants(globals(), argv)
    import torch

    import profiling_models
    from sincere.assets.workloads import read_workloads, synthetic_prompts
    from sincere.engine.engine import Engine
    from sincere.profiles.files import (
        device_name,
        hardware_name,
        measured_source,
        profile_path,
        timestamp,
    )
    from sincere.profiles.profiling import draw_prompt_ids, measure_batch, report_sweeps, run_sweeps

    if cfg.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA GPU here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}): the GPU check needs one; "
              f"--device cpu runs the same steps on the tiny models", file=sys.stderr)
        return 2
    models_dir, profiles_dir = Path(cfg.MODELS_DIR), Path(cfg.PROFILES_DIR)
    env = environment(cfg.DEVICE)
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        profiling_models.profile_loading(models_dir, list(cfg.MODELS), profiles_dir, env,
                                         cfg.ITERATIONS, warmup=cfg.WARMUP, device=cfg.DEVICE,
                                         log=log)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2

    prompts = (list(read_workloads(Path(cfg.WORKLOADS_DIR)).values()) if cfg.WORKLOADS_DIR
               else synthetic_prompts(cfg.PROMPTS, seed=cfg.SEED))
    engine = Engine(models_dir, device=cfg.DEVICE, host_cache=True, cc_mode=env["cc_mode"],
                    max_new_tokens=cfg.MAX_NEW_TOKENS)
    models = list(cfg.MODELS) or engine.available_models()
    sizes = sorted(set(cfg.BATCH_SIZES))
    name = device_name(env, engine.device.type)
    stamp = timestamp()
    batch_path = profile_path(profiles_dir, "batch_profiling", name, env["cc_mode"], stamp)
    best_path = profile_path(profiles_dir, "best_batch", name, env["cc_mode"], stamp)
    log(f"batch sweep of {', '.join(models)}: sizes {sizes}, {cfg.RUNS} runs, "
        f"{cfg.MAX_NEW_TOKENS} new tokens, time limit {cfg.TIME_LIMIT_S:g} s")
    monitor = start_monitor(cfg.MONITOR_PERIOD_S)

    def profile(model: str, batch_size: int, run: int) -> dict[str, Any]:
        if engine.resident != model:  # the load is not part of any batch's time
            engine.unload()
            engine.load(model)
        batch = draw_prompt_ids(prompts, batch_size, cfg.SEED + run)
        return measure_batch(engine, batch, cfg.MAX_NEW_TOKENS, monitor)

    try:
        outcomes, summary = run_sweeps(profile, models, sizes, cfg.RUNS, cfg.MAX_NEW_TOKENS,
                                       measured_source(hardware_name(env)), batch_path,
                                       best_path, time_limit_s=cfg.TIME_LIMIT_S,
                                       warmup=cfg.WARMUP, log=log)
    finally:
        if monitor is not None:
            monitor.stop()
        engine.unload()
    log(f"wrote {batch_path} and {best_path}")
    return report_sweeps(outcomes, summary, log)


if __name__ == "__main__":
    sys.exit(main())
