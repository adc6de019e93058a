"""The fast swap path and the fast batch engine against their baselines, measured in one run.

    python benchmarks/bench_fast_engine.py --models-dir models_full   # on a GPU (full-size)
    python benchmarks/bench_fast_engine.py --models-dir models        # CPU smoke mode (tiny)

1. Swaps. The pinned host-to-device bandwidth is measured first (a 2 GiB buffer); then each
   model is swapped in from the host cache (flat pinned buffers, one copy) and, as under CC,
   from pageable memory (chunked copies from COPY_THREADS threads). Reported: seconds and the
   ratio swap time / (model bytes / pinned bandwidth), the issue's goal being at most 1.3.
2. Batches. At BATCH prompts and MAX_NEW_TOKENS new tokens: the original study's way (float32
   weights, the Hugging Face text-generation pipeline) against the engine's static KV cache
   with torch.compile (bfloat16, compiled before timing), side by side on the same card:
   seconds, requests per second and the ratio.
On a CPU (no GPU) it runs a smoke mode on the tiny models: it checks that a swap from the
host cache and the compiled engine give the same tokens as the plain path, and prints the
timings without drawing conclusions from them. Writes nothing; exits 1 when a check fails.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sincere.cli import parse_constants  # noqa: E402

MODELS_DIR = "models"  # model folders (download_models.py --random on a GPU, --tiny on a CPU)
MODELS = ["llama3-8b"]  # models to measure (all three take longer: about 3 minutes each)
BATCH = 64  # batch size of the throughput comparison (the original's best batches: 48-64)
MAX_NEW_TOKENS = 50  # new tokens per prompt
PROMPT_WORDS = 60  # words of each made-up prompt
SWAPS = 5  # timed swaps per model and path (median reported)
RUNS = 2  # timed batches per engine (median reported)
COPY_THREADS = 4  # threads of the pageable (CC) copy
COMPILE_BACKEND = "inductor"  # torch.compile backend of the fast engine
DEVICE = ""  # torch device ("" = cuda when there is one, else cpu: smoke mode)


def pinned_bandwidth_gbps(device: str, gib: int = 2) -> float:
    """Host-to-device GB/s from pinned memory (median of three copies of ``gib`` GiB)."""
    import torch

    host = torch.empty(gib * 2**30, dtype=torch.uint8, pin_memory=True)
    target = torch.empty_like(host, device=device)
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return host.numel() / statistics.median(times) / 1e9


def median_swap_s(engine, alias: str, swaps: int) -> float:
    times = []
    for _ in range(swaps):
        times.append(engine.load(alias).seconds)
        engine.unload()
    return statistics.median(times)


def made_up_prompts(count: int, words: int) -> list[str]:
    """Prompts of the same length, made up here (no workload needed)."""
    return [" ".join(f"item{i} number{j}" for j in range(words // 2)) for i in range(count)]


def pipeline_seconds(models_dir: Path, alias: str, prompts: list[str], max_new_tokens: int,
                     device: str, runs: int) -> float:
    """The original study's way: float32 weights, pipeline('text-generation'), one batch."""
    import torch
    import transformers

    from sincere.models import dtype_kwargs, quiet_transformers

    folder = models_dir / alias
    with quiet_transformers():
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, **dtype_kwargs(torch.float32)).to(device)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    generator = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    options = {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens,
               "do_sample": False, "batch_size": len(prompts), "return_full_text": False,
               "pad_token_id": tokenizer.pad_token_id}
    generator(prompts, **options)  # warm-up
    times = []
    for _ in range(runs):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        generator(prompts, **options)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    del generator, model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    import torch

    from sincere.engine import Engine

    device = cfg.DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    models_dir = Path(cfg.MODELS_DIR)
    problems: list[str] = []
    if gpu:
        print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
        bandwidth = pinned_bandwidth_gbps(device)
        print(f"pinned host-to-device bandwidth: {bandwidth:.1f} GB/s")
    else:
        print("no GPU: smoke mode on the CPU (correctness only; timings say nothing of a GPU)")
        bandwidth = None

    # --- 1. swaps -------------------------------------------------------------------------
    prompts = made_up_prompts(cfg.BATCH if gpu else 4, cfg.PROMPT_WORDS)
    engines = {"pinned": Engine(models_dir, device=device, host_cache=True),
               "pageable": Engine(models_dir, device=device, host_cache=True, copy_mode="chunked",
                                  copy_threads=cfg.COPY_THREADS)}
    if not gpu:
        engines = {"host cache": Engine(models_dir, device=device, host_cache=True)}
    plain = Engine(models_dir, device=device, host_cache=False)
    print(f"\n{'model':<12}{'path':<12}{'GB':>8}{'swap s':>10}{'ideal s':>10}{'ratio':>8}")
    for alias in cfg.MODELS:
        plain.load(alias)
        expected = plain.generate(prompts[:4], cfg.MAX_NEW_TOKENS).output_ids
        plain.unload()
        for name, engine in engines.items():
            engine.prefetch(alias)
            size_gb = engine.host.entries[alias].weights.nbytes / 1e9
            seconds = median_swap_s(engine, alias, cfg.SWAPS)
            engine.load(alias)
            if engine.generate(prompts[:4], cfg.MAX_NEW_TOKENS).output_ids != expected:
                problems.append(f"{alias}: a swap from the {name} path changed the tokens")
            engine.unload()
            engine.evict(alias)
            ideal = size_gb / bandwidth if bandwidth else None
            print(f"{alias:<12}{name:<12}{size_gb:>8.2f}{seconds:>10.3f}"
                  + (f"{ideal:>10.3f}{seconds / ideal:>8.2f}" if ideal else f"{'-':>10}{'-':>8}"))

    # --- 2. batches -----------------------------------------------------------------------
    print(f"\nbatch of {len(prompts)}, {cfg.MAX_NEW_TOKENS} new tokens")
    print(f"{'model':<12}{'engine':<34}{'s':>8}{'req/s':>9}{'ratio':>8}")
    for alias in cfg.MODELS:
        original_s = pipeline_seconds(models_dir, alias, prompts, cfg.MAX_NEW_TOKENS, device,
                                      cfg.RUNS)
        fast = Engine(models_dir, device=device, host_cache=True, decode="static",
                      compile_backend=cfg.COMPILE_BACKEND)
        fast.load(alias)
        compile_s = fast.generate(prompts, cfg.MAX_NEW_TOKENS).seconds  # compiles its shapes
        times, outputs = [], None
        for _ in range(cfg.RUNS):
            result = fast.generate(prompts, cfg.MAX_NEW_TOKENS)
            times.append(result.seconds)
            outputs = result.output_ids
        fast_s = statistics.median(times)
        plain.load(alias)
        if plain.generate(prompts, cfg.MAX_NEW_TOKENS).output_ids != outputs:
            problems.append(f"{alias}: the compiled engine's tokens differ from the plain path")
        plain.unload()
        fast.unload()
        n = len(prompts)
        print(f"{alias:<12}{'float32, HF pipeline (original)':<34}{original_s:>8.3f}"
              f"{n / original_s:>9.2f}{1.0:>8.2f}")
        print(f"{alias:<12}{fast.dtype!s:<15}{' static+compile':<19}{fast_s:>8.3f}"
              f"{n / fast_s:>9.2f}{original_s / fast_s:>8.2f}   (compiled in {compile_s:.0f} s)")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("tokens: same as the plain path" if not problems else "checks FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
