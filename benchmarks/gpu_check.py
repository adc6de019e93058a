"""The check for a lent GPU: the fast engine against the original study's way, in one run that
fits in 8 minutes on one H100; on a machine without a GPU, a smoke mode of the same code.

    python benchmarks/gpu_check.py                    # results under $OUT (else gpu_check_out/)
    python benchmarks/gpu_check.py --out-dir /tmp/check --models llama3-8b

On a GPU it builds granite-7b, gemma-7b and llama3-8b with random bf16 weights directly on the
GPU (configs and tokenizers only go to disk, under OUT_DIR/configs: no 47 GB of weights), keeps
them in the engine's host cache and measures, in order:
  1. the host-to-device bandwidth from pinned (and pageable) memory;
  2. each model's swap from the host cache by each copy mode (pageable, chunked from threads on
     streams, pinned), as the ratio swap time / (model bytes / pinned bandwidth) (goal <= 1.3);
  3. on THROUGHPUT_MODEL at BATCH prompts and MAX_NEW_TOKENS new tokens: the original study's
     way (float32 weights, the Hugging Face text-generation pipeline), eager bf16 generate and
     the static compiled engine, as ratios to the first (goal >= 4), and how many of the static
     engine's tokens agree with eager's (a fraction: padding, fused kernels and reduction order
     flip some greedy tokens of random weights by design; the check is >= AGREEMENT);
  4. the other models' warm-up, then SWAP_ROUNDS rounds of swapping through all models with
     batches of varied sizes and prompt lengths: compiles and CUDA-graph recordings after
     warm-up (the check: none), and whether every swap of a model put it at the same addresses;
  5. optional, on a GPU and started only before OPTIONAL_UNTIL_S: the static engine at twice
     the batch.
On a CPU (smoke mode, under 3 minutes on two cores) the same parts run on the tiny
architectures in float32, with the "eager" compile backend and no pinned memory; its timings
say nothing about a GPU.

Writes OUT_DIR/gpu_check.json (every figure, check, goal, skipped part and error) and
gpu_check.txt (the table), rewritten after every part, so that a run cut short keeps what it
measured. Exit status: 0 when every check passed, 1 when one failed or a part that the checks
need could not run (an error, the time limit), 2 for bad arguments. The goals are reported, met
or not; they do not decide the status. Needs torch, transformers, tokenizers and numpy (psutil
and nvidia-ml-py for the environment block, if present); not Flask.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.check_report import Report  # noqa: E402
from benchmarks.comparisons import (  # noqa: E402
    bandwidth,
    made_up_prompts,
    pipeline_seconds,
    token_agreement,
)
from sincere.cli import parse_constants  # noqa: E402

OUT_DIR = ""  # results folder ("" = $OUT when set, else gpu_check_out)
MODELS = ["granite-7b", "gemma-7b", "llama3-8b"]  # architectures built and swapped
THROUGHPUT_MODEL = "llama3-8b"  # the model of the throughput comparison
BATCH = 64  # GPU: batch of the comparison (the original study's best batch for llama)
SMOKE_BATCH = 4  # CPU smoke mode: the same, on the tiny models
MAX_NEW_TOKENS = 50  # new tokens per prompt (the original study's)
SMOKE_NEW_TOKENS = 8  # CPU smoke mode: new tokens per prompt (a CPU step takes ~0.1 s here)
PROMPT_BUCKET = 256  # the static engine's one prompt bucket here (one compile per model)
PROMPT_WORDS = 100  # made-up prompts have 8 to this many words (all within the bucket)
RUNS = 2  # timed batches per way of generating (the median is reported; 1 in smoke mode)
COPY_ROUNDS = 3  # timed swaps per model and copy mode (the median is reported)
SWAP_ROUNDS = 2  # rounds of swapping through every model after warm-up
AGREEMENT = 0.9  # the check: share of static tokens equal to eager's
SWAP_RATIO_GOAL = 1.3  # goal: pinned swap time / (bytes / pinned bandwidth)
SPEEDUP_GOAL = 4.0  # goal: static compiled throughput / the original study's way
TIME_LIMIT_S = 480.0  # the whole check; a part still running then is cut short (status 1)
OPTIONAL_UNTIL_S = 420.0  # optional parts start only before this
COMPILE_BACKEND = ""  # torch.compile backend ("" = inductor on a GPU, eager in smoke mode)
DEVICE = ""  # torch device ("" = cuda when there is one, else cpu: smoke mode)
SEED = 0  # seed of the random weights and of the made-up prompts


class GpuCheck:
    """The parts of the check, sharing one static engine whose host cache holds every model."""

    def __init__(self, cfg: Any, report: Report) -> None:
        import torch

        from sincere.engine.engine import Engine

        self.cfg, self.report = cfg, report
        self.device = torch.device(cfg.DEVICE or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gpu = self.device.type == "cuda"
        self.batch = cfg.BATCH if self.gpu else cfg.SMOKE_BATCH
        self.new_tokens = cfg.MAX_NEW_TOKENS if self.gpu else cfg.SMOKE_NEW_TOKENS
        self.runs = cfg.RUNS if self.gpu else min(cfg.RUNS, 1)
        self.configs_dir = Path(report.out_dir) / "configs"
        backend = cfg.COMPILE_BACKEND or ("inductor" if self.gpu else "eager")
        self.engine = Engine(self.configs_dir, device=str(self.device), host_cache=True,
                             copy_mode="pageable", decode="static", compile_backend=backend,
                             max_new_tokens=self.new_tokens,
                             prompt_buckets=[cfg.PROMPT_BUCKET])
        self.tokenizers: dict[str, Any] = {}
        self.configs: dict[str, Any] = {}
        self.pinned_gbps: float | None = None
        report.set("mode", "gpu" if self.gpu else "cpu-smoke")
        report.set("settings", {"models": list(cfg.MODELS), "throughput_model":
                                cfg.THROUGHPUT_MODEL, "batch": self.batch,
                                "max_new_tokens": self.new_tokens, "runs": self.runs,
                                "prompt_bucket": cfg.PROMPT_BUCKET, "compile_backend": backend,
                                "dtype": str(self.engine.dtype).removeprefix("torch."),
                                "time_limit_s": cfg.TIME_LIMIT_S})

    # --- 0 and 1 -----------------------------------------------------------------------------
    def environment(self) -> None:
        import importlib.metadata as metadata

        import torch
        import transformers

        try:
            from sincere.host.environment import environment_block

            env = environment_block()
        except ImportError as exc:  # a bare image may lack psutil or nvidia-ml-py
            env = {"gpu_name": torch.cuda.get_device_name() if self.gpu else None,
                   "cc_mode": "unknown", "note": f"no monitor ({exc})"}
        env.update(torch=torch.__version__, cuda=torch.version.cuda,
                   transformers=transformers.__version__)
        for package in ("tokenizers", "numpy", "psutil", "nvidia-ml-py"):
            try:
                env[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                env[package] = None
        self.report.set("environment", env)
        self.report.set("cc_mode", env.get("cc_mode", "unknown"))

    def bandwidth(self) -> None:
        self.pinned_gbps = bandwidth(self.device, self.report)

    # --- 2: build and swap ---------------------------------------------------------------------
    def build(self) -> None:
        """Every model made in memory (on the GPU there), kept in the host cache at its exact
        size; only its config and tokenizer written under configs/."""
        import torch

        from sincere.assets.local_tokenizers import save_tokenizer, tokenizer_corpus
        from sincere.assets.models import random_model_and_tokenizer

        corpus = tokenizer_corpus(self.cfg.SEED)
        built = {}
        for alias in self.cfg.MODELS:
            started = time.perf_counter()
            model, tokenizer = random_model_and_tokenizer(
                alias, self.cfg.SEED, tiny=not self.gpu, corpus=corpus, device=str(self.device))
            folder = self.configs_dir / alias
            folder.mkdir(parents=True, exist_ok=True)
            model.config.save_pretrained(folder)
            save_tokenizer(tokenizer, folder)
            self.tokenizers[alias], self.configs[alias] = tokenizer, model.config
            build_s = time.perf_counter() - started
            pinning = self.engine.adopt(alias, model, tokenizer)  # pageable: pinned when timed
            del model
            if self.gpu:
                torch.cuda.empty_cache()
            built[alias] = {"build_s": round(build_s, 2), "bytes": self._bytes(alias),
                            "pinning": pinning.how}
            print(f"  {alias}: {built[alias]['bytes'] / 1e9:.2f} GB built in {build_s:.1f} s",
                  flush=True)
        self.report.set("models", built)
        self.engine.set_batch_buckets(dict.fromkeys(self.cfg.MODELS, [self.batch]))
        reserved = self.engine.reserve()
        self.report.set("reserved_gb", round(reserved / 1e9, 3))

    def _bytes(self, alias: str) -> int:
        return self.engine.host.entries[alias].weights.nbytes

    def swaps(self) -> None:
        """Each model swapped in by each copy mode; the ratio to the ideal pinned copy."""
        from sincere.engine.load_paths import choose, time_copy_modes

        results: dict[str, Any] = {}
        for alias in self.cfg.MODELS:
            times = time_copy_modes(self.engine, alias, self.cfg.COPY_ROUNDS)
            nbytes = self._bytes(alias)
            ideal_s = nbytes / (self.pinned_gbps * 1e9) if self.pinned_gbps else None
            modes = {}
            for mode, value in times.items():
                if isinstance(value, str):
                    modes[mode] = {"skipped": value}
                    continue
                median = statistics.median(value)
                modes[mode] = {"median_s": round(median, 4),
                               "seconds": [round(v, 4) for v in value],
                               "ratio": round(median / ideal_s, 3) if ideal_s else None}
            choice = choose(times, alias, nbytes / 1e9)
            pinning = self.engine.pinning(alias)
            results[alias] = {"bytes": nbytes, "ideal_s": round(ideal_s, 4) if ideal_s else None,
                              "modes": modes, "fastest": choice.mode,
                              "pinning": {"how": pinning.how, "bytes": pinning.nbytes,
                                          "reserved_bytes": pinning.reserved_bytes,
                                          "seconds": round(pinning.seconds, 3)}}
            pinned = modes.get("pinned", {})
            if "ratio" in pinned and pinned["ratio"] is not None:
                self.report.goal(f"swap ratio {alias}", pinned["ratio"] <= self.cfg.SWAP_RATIO_GOAL,
                                 f"pinned {pinned['median_s']} s / ideal {ideal_s:.4f} s = "
                                 f"{pinned['ratio']} (goal <= {self.cfg.SWAP_RATIO_GOAL})")
        self.report.set("swaps", results)
        fastest = results[self.cfg.MODELS[0]]["fastest"]
        self.engine.copy_mode = self.engine.host.copy_mode = fastest  # for the rest of the check

    # --- 3: throughput and agreement -----------------------------------------------------------
    def throughput(self) -> None:
        import torch

        from sincere.assets.architectures import FULL_SIZE, TINY
        from sincere.assets.models import random_model

        alias, cfg = self.cfg.THROUGHPUT_MODEL, self.cfg
        prompts = made_up_prompts(self.batch, cfg.PROMPT_WORDS, cfg.SEED)
        family = (FULL_SIZE if self.gpu else TINY)[alias].family
        fp32 = random_model(self.configs[alias], family, torch.float32, str(self.device),
                            cfg.SEED)
        first_s, original_s = pipeline_seconds(fp32, self.tokenizers[alias], prompts,
                                               self.new_tokens, self.runs)
        del fp32
        if self.gpu:
            torch.cuda.empty_cache()
        ways = {"hf_pipeline_fp32": {"median_s": original_s, "first_call_s": round(first_s, 4)}}
        self.engine.load(alias)
        try:
            with self.engine.eager_decoding():
                eager, eager_ids = self._timed(prompts, "eager bf16" if self.gpu else "eager")
            warm_s = self.engine.warm_up()  # compiles the static engine for its shape
            static, static_ids = self._timed(prompts, "static compiled")
        finally:
            self.engine.unload()
        ways["eager"] = {"median_s": eager}
        ways["static_compiled"] = {"median_s": static, "warm_up_s": round(warm_s, 2)}
        for way in ways.values():
            way["requests_per_s"] = round(len(prompts) / way["median_s"], 3)
            way["ratio_to_original"] = round(original_s / way["median_s"], 3)
            way["median_s"] = round(way["median_s"], 4)
        self.report.set("throughput", {"model": alias, "batch": len(prompts),
                                       "max_new_tokens": self.new_tokens, "ways": ways})
        speedup = ways["static_compiled"]["ratio_to_original"]
        self.report.goal("static compiled / original", speedup >= cfg.SPEEDUP_GOAL,
                         f"{speedup}x at batch {len(prompts)} (goal >= {cfg.SPEEDUP_GOAL}x)")
        agreement = token_agreement(static_ids, eager_ids)
        self.report.set("token_agreement", {**agreement, "threshold": cfg.AGREEMENT})
        self.report.check("token agreement static vs eager", agreement["fraction"] >= cfg.AGREEMENT,
                          f"{agreement['fraction']:.4f} of {agreement['tokens']} tokens "
                          f"(>= {cfg.AGREEMENT}); first tokens "
                          f"{agreement['first_token_fraction']:.3f}")

    def _timed(self, prompts: list[str], label: str) -> tuple[float, list[list[int]]]:
        """One untimed batch, then RUNS timed ones; (median seconds, the last's token ids)."""
        times, ids = [], []
        for run in range(1 + self.runs):
            result = self.engine.generate(prompts)
            problems = sorted(set(result.errors)) + (["split"] if result.retries else [])
            if problems:
                raise RuntimeError(f"{label}: {len(result.failed)} of {len(prompts)} prompts "
                                   f"failed ({', '.join(problems)})")
            if run:
                times.append(result.seconds)
            ids = result.output_ids
        return statistics.median(times), ids

    # --- 4: warm-up and swaps through every model ----------------------------------------------
    def warm_up_others(self) -> None:
        for alias in self.cfg.MODELS:
            if alias == self.cfg.THROUGHPUT_MODEL and "throughput" in self.report.data:
                continue  # warmed up in its throughput part
            self.engine.load(alias)
            try:
                seconds = self.engine.warm_up()
            finally:
                self.engine.unload()
            print(f"  {alias}: warmed up in {seconds:.1f} s", flush=True)

    def swap_through(self) -> None:
        """SWAP_ROUNDS rounds over every model: a batch of varied size and prompt lengths after
        each swap; no compile or graph recording, and the same addresses at every swap."""
        from sincere.engine.weights import _module_tensors

        self.engine.static.watch.mark()
        sizes = [self.batch, max(1, self.batch // 2 + 1), 1, max(1, self.batch - 1)]
        addresses: dict[str, set[tuple[int, ...]]] = {a: set() for a in self.cfg.MODELS}
        batches = failed = 0
        for round_number in range(self.cfg.SWAP_ROUNDS):
            for index, alias in enumerate(self.cfg.MODELS):
                size = sizes[(round_number + index) % len(sizes)]
                prompts = made_up_prompts(size, self.cfg.PROMPT_WORDS,
                                          self.cfg.SEED + 1 + round_number * 7 + index)
                self.engine.load(alias)
                try:
                    module = self.engine.host.entries[alias].module
                    addresses[alias].add(tuple(t.data_ptr() for t in _module_tensors(module)))
                    result = self.engine.generate(prompts)
                finally:
                    self.engine.unload()
                batches += 1
                failed += len(result.failed)
        counts = self.engine.compile_counts()
        self.report.set("compile_counts", counts)
        self.report.set("swap_through", {"rounds": self.cfg.SWAP_ROUNDS, "batches": batches,
                                         "failed_prompts": failed})
        report = self.report
        report.check("no failed prompt", failed == 0, f"{failed} failed in {batches} batches")
        report.check("no compile after warm-up", counts["compiles_after_warm_up"] == 0,
                     f"{counts['compiles_after_warm_up']} compiles in {batches} batches "
                     f"across {batches} swaps")
        report.check("no CUDA-graph recording after warm-up",
                     counts["graph_recordings_after_warm_up"] == 0,
                     f"{counts['graph_recordings_after_warm_up']} recordings"
                     + ("" if self.gpu else " (no CUDA graphs on a CPU)"))
        report.check("no prompt beyond the bucket", counts["eager_fallbacks"] == 0,
                     f"{counts['eager_fallbacks']} batches decoded eagerly")
        report.check("arenas allocated once",
                     counts["weights_arena_allocations"] == counts["kv_arena_allocations"] == 1,
                     f"weights {counts['weights_arena_allocations']}, "
                     f"KV cache {counts['kv_arena_allocations']}")
        moved = [a for a, seen in addresses.items() if len(seen) != 1]
        report.check("same weight addresses at every swap", not moved,
                     f"moved: {', '.join(moved)}" if moved else
                     f"{len(addresses)} models, {self.cfg.SWAP_ROUNDS} swaps each")

    # --- 5: optional --------------------------------------------------------------------------
    def larger_batch(self) -> None:
        """The static engine at twice the batch (a new shape: compiled or recorded here, after
        the counts above were taken)."""
        alias = self.cfg.THROUGHPUT_MODEL
        prompts = made_up_prompts(2 * self.batch, self.cfg.PROMPT_WORDS, self.cfg.SEED + 99)
        self.engine.set_batch_buckets({alias: [self.batch, 2 * self.batch]})
        self.engine.load(alias)
        try:
            seconds, _ids = self._timed(prompts, "static compiled, larger batch")
        finally:
            self.engine.unload()
        self.report.set("larger_batch", {"model": alias, "batch": len(prompts),
                                         "median_s": round(seconds, 4),
                                         "requests_per_s": round(len(prompts) / seconds, 3)})


def format_report(data: dict[str, Any]) -> str:
    """The table printed at the end and saved as gpu_check.txt."""
    env = data.get("environment", {})
    lines = [f"GPU check ({data.get('mode', '?')}): {env.get('gpu_name') or env.get('cpu_model')}"
             f", cc_mode {data.get('cc_mode', '?')}, torch {env.get('torch')}, transformers "
             f"{env.get('transformers')}: {data.get('status', '?').upper()} in "
             f"{data.get('elapsed_s', 0):.0f} s"]
    if "bandwidth" in data:
        lines.append("bandwidth: " + ", ".join(f"{k} {v}" for k, v in data["bandwidth"].items()))
    swaps = data.get("swaps", {})
    if swaps:
        lines.append(f"{'model':<12}{'GB':>7}{'ideal s':>9}   pageable s (ratio)   chunked s "
                     f"(ratio)    pinned s (ratio)")
        for alias, row in swaps.items():
            cells = []
            for mode in ("pageable", "chunked", "pinned"):
                entry = row["modes"].get(mode, {})
                cells.append(f"{entry['median_s']:>9.4f} ({entry['ratio']})" if "median_s" in entry
                             else f"{'-':>9} ({entry.get('skipped', 'not run')})")
            lines.append(f"{alias:<12}{row['bytes'] / 1e9:>7.2f}{row['ideal_s'] or 0:>9.4f}   "
                         + "   ".join(f"{c:<20}" for c in cells))
    if "throughput" in data:
        t = data["throughput"]
        lines.append(f"{t['model']}, batch {t['batch']}, {t['max_new_tokens']} new tokens:")
        for way, row in t["ways"].items():
            lines.append(f"  {way:<20}{row['median_s']:>9.3f} s{row['requests_per_s']:>9.2f} "
                         f"req/s{row['ratio_to_original']:>8.2f}x")
    if "token_agreement" in data:
        a = data["token_agreement"]
        lines.append(f"token agreement static vs eager: {a['fraction']:.4f} of {a['tokens']} "
                     f"(threshold {a['threshold']})")
    if "compile_counts" in data:
        c = data["compile_counts"]
        lines.append(f"after warm-up: {c['compiles_after_warm_up']} compiles, "
                     f"{c['graph_recordings_after_warm_up']} CUDA-graph recordings")
    lines += [f"check {'ok    ' if c['passed'] else 'FAILED'} {c['name']}: {c['detail']}"
              for c in data.get("checks", [])]
    lines += [f"goal  {'met    ' if g['met'] else 'not met'} {g['name']}: {g['detail']}"
              for g in data.get("goals", [])]
    lines += [f"skipped {s['part']}: {s['reason']}" for s in data.get("skipped", [])]
    lines += [f"error in {e['part']}: {e['error']}: {e['message']}" for e in data.get("errors", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every part in turn within the time limit; 0 when every check passed."""
    cfg = parse_constants(globals(), argv)
    if cfg.THROUGHPUT_MODEL not in cfg.MODELS or not cfg.MODELS:
        print(f"THROUGHPUT_MODEL {cfg.THROUGHPUT_MODEL!r} must be one of MODELS",
              file=sys.stderr)
        return 2
    import torch

    if cfg.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"DEVICE {cfg.DEVICE!r}, but torch {torch.__version__} (CUDA build "
              f"{torch.version.cuda or 'none'}) sees no GPU; without DEVICE the check runs its "
              f"smoke mode on the CPU", file=sys.stderr)
        return 2
    out_dir = Path(cfg.OUT_DIR or os.environ.get("OUT") or "gpu_check_out")
    report = Report(out_dir, "gpu_check", format_report)
    timer = report.watchdog(cfg.TIME_LIMIT_S)
    try:
        check = GpuCheck(cfg, report)
    except Exception as exc:  # noqa: BLE001 - reported in the results like any part's error
        report.data["errors"].append({"part": "setup", "error": type(exc).__name__,
                                      "message": str(exc).strip()[:300]})
        report.write(final=True)
        print(f"setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"gpu check: {report.data['mode']} on {check.device}, results in {out_dir}", flush=True)
    essential_ok = True
    for part, work in [("environment", check.environment), ("bandwidth", check.bandwidth),
                       ("build", check.build), ("swaps", check.swaps),
                       ("throughput", check.throughput), ("warm_up", check.warm_up_others),
                       ("swap_through", check.swap_through)]:
        if part in ("swaps", "throughput", "warm_up", "swap_through") and not essential_ok:
            report.skip(part, "an earlier part it needs failed")
            continue
        if not report.run(part, work) and part in ("build", "warm_up"):
            essential_ok = False
    if not check.gpu:
        report.skip("larger_batch", "smoke mode: the throughput part's code at another shape")
    elif not essential_ok:
        report.skip("larger_batch", "an earlier part it needs failed")
    elif report.elapsed_s() >= cfg.OPTIONAL_UNTIL_S:
        report.skip("larger_batch", f"optional parts start only before "
                    f"{cfg.OPTIONAL_UNTIL_S:g} s (now {report.elapsed_s():.0f} s)")
    else:
        report.run("larger_batch", check.larger_batch)
    timer.cancel()
    report.write(final=True)
    print(format_report(report.data), flush=True)
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
