"""The check for a lent GPU: the fast engine against the original study's way, in one run that
fits in 6 minutes on one H100; on a machine without a GPU, a smoke mode of the same code.

    python benchmarks/gpu_check.py                      # results under $OUT (else gpu_check_out/)
    python benchmarks/gpu_check.py --parts throughput   # only that part (and what it needs)
    COMPILE_BACKEND=aot_eager python benchmarks/gpu_check.py   # a constant from the environment

On a GPU it builds granite-7b, gemma-7b and llama3-8b with random bf16 weights directly on the
GPU (configs and tokenizers go to a temporary folder: no 47 GB of weights on disk, nothing but
the results under OUT_DIR), checks that every parameter and buffer is finite, keeps them in the
engine's host cache and measures, in order (the parts):
  bandwidth     the host-to-device bandwidth from pinned and pageable memory;
  swaps         each model's swap from the host cache by each copy mode (pageable, chunked from
                threads on streams, pinned), as swap time / (model bytes / pinned bandwidth)
                (goal <= SWAP_RATIO_GOAL);
  throughput    on THROUGHPUT_MODEL at BATCH prompts and MAX_NEW_TOKENS new tokens: the original
                study's way (float32 weights, the Hugging Face text-generation pipeline), eager
                bf16 generate and the static compiled engine, as ratios to the first (goal >=
                SPEEDUP_GOAL), with the compiles during the timed runs (the check: none), and
                the static engine's teacher-forced token agreement with eager decoding;
  warm_up       the other models' warm-up (each compiles) and their token agreement;
  swap_through  SWAP_ROUNDS rounds of swapping through all models with batches of varied
                sizes, one prompt exactly PROMPT_BUCKET tokens long, then one a token longer:
                compiles, CUDA-graph recordings and skipped CUDA graphs after warm-up (none),
                the prompts at the bucket's end decoded static and the longer one eagerly;
  larger_batch  optional (OPTIONAL, or named in PARTS): the static engine at twice the batch.
The summary then checks that every model warmed up compiled, through the backend asked for, that
on a GPU every warm-up shape recorded its CUDA graph and no CUDA graph was skipped, and that no
timed run compiled.

Token agreement is teacher-forced (benchmarks.comparisons): the static engine is scored on eager's
own prefixes, so a flipped near-tie of bf16 kernels costs one token instead of the rest of its
row; with it, a control (eager on other prompts' prefixes) says how much the context decides the
tokens of a random-weight model at all. Every logit must be finite.

On a CPU (smoke mode, under 3 minutes on two cores) the same parts run on the tiny architectures
in float32 with the "aot_eager" compile backend (Dynamo, AOTAutograd and functionalisation, no
C++ build; "--compile-backend inductor" builds C++ kernels with the machine's compiler) and no
pinned memory; its timings say nothing about a GPU.

The process the user starts only supervises: the measuring process is a child whose whole
output goes to the console and to OUT_DIR/gpu_check.log, and which writes gpu_check.json (every
figure, check, goal, skipped part and error) and gpu_check.txt (the table) at every change. At
TIME_LIMIT_S (or SIGTERM, Ctrl-C) the child is ended, the part it was in is marked as cut short,
and the table of what was measured is written and printed all the same. Exit status: 0 when
every check passed, 1 when one failed or a part could not run (an error, the time limit), 2 for
bad arguments. The goals are reported, met or not; they do not decide the status. Every
constant can also be set in the environment under its own name (a list: words separated by
spaces); a flag wins over the environment. Needs torch, transformers, tokenizers and numpy
(psutil and nvidia-ml-py for the environment block, if present); not Flask.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.check_report import Report, supervise  # noqa: E402
from sincere.cli import parse_constants  # noqa: E402

OUT_DIR = ""  # results folder ("" = $OUT when set, else gpu_check_out): three files, no folder
MODELS = ["granite-7b", "gemma-7b", "llama3-8b"]  # architectures built and swapped
THROUGHPUT_MODEL = "llama3-8b"  # the model of the throughput comparison
PARTS = []  # run only these parts and those they need (empty: every part but the optional)
OPTIONAL = False  # also run the optional part: the static engine at twice the batch
BATCH = 64  # GPU: batch of the comparison (the original study's best batch for llama)
SMOKE_BATCH = 4  # CPU smoke mode: the same, on the tiny models
MAX_NEW_TOKENS = 50  # new tokens per prompt (the original study's)
SMOKE_NEW_TOKENS = 8  # CPU smoke mode: new tokens per prompt (a CPU step takes ~0.1 s here)
PROMPT_BUCKET = 256  # the static engine's one prompt bucket here (one compile per model)
PROMPT_WORDS = 100  # made-up prompts have 8 to this many words (one per model is made longer)
RUNS = 2  # timed batches per way of generating (the median is reported; 1 in smoke mode)
COPY_ROUNDS = 2  # timed swaps per model and copy mode (the median is reported)
SWAP_ROUNDS = 2  # rounds of swapping through every model after warm-up
AGREEMENT = 0.9  # the check: share of steps where static predicts eager's token on its prefix
SWAP_RATIO_GOAL = 1.3  # goal: pinned swap time / (bytes / pinned bandwidth)
SPEEDUP_GOAL = 4.0  # goal: static compiled throughput / the original study's way
TIME_LIMIT_S = 360.0  # the whole check; the part still running then is cut short (status 1)
OPTIONAL_UNTIL_S = 270.0  # the optional part starts only before this (it needs a compile)
COMPILE_BACKEND = ""  # torch.compile backend ("" = inductor on a GPU, aot_eager in smoke mode)
DEVICE = ""  # torch device ("" = cuda when there is one, else cpu: smoke mode)
SEED = 0  # seed of the random weights and of the made-up prompts

_ORDER = ["environment", "bandwidth", "build", "swaps", "throughput", "warm_up", "swap_through",
         "larger_batch", "summary"]
_NEEDS = {"swaps": ["bandwidth", "build"], "throughput": ["build"], "warm_up": ["build"],
         "swap_through": ["build", "warm_up"], "larger_batch": ["build"]}
_OPTIONAL_PARTS = {"larger_batch"}
_ALWAYS = {"environment", "summary"}
_WORKER_ENV = "SINCERE_GPU_CHECK_WORKER"  # set in the measuring child the command starts


def parts_to_run(named: list[str], optional: bool) -> list[str]:
    """The parts to run, in order: those named and what they need (none named: all but the
    optional ones, which ``optional`` adds), always with the environment and the summary."""
    chosen = set(named) if named else set(_ORDER) - _OPTIONAL_PARTS
    if optional:
        chosen |= _OPTIONAL_PARTS
    for part in list(chosen):
        chosen.update(_NEEDS.get(part, []))
    return [part for part in _ORDER if part in chosen | _ALWAYS]


class GpuCheck:
    """The parts of the check, sharing one static engine whose host cache holds every model."""

    def __init__(self, cfg: Any, report: Report, configs_dir: Path) -> None:
        import torch

        from sincere.engine.engine import Engine, set_cpu_threads

        self.cfg, self.report = cfg, report
        self.device = torch.device(cfg.DEVICE or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gpu = self.device.type == "cuda"
        # All cores but one, as the server and the profilers: OpenMP threads that wait for a
        # core taken by another process make every batch several times slower.
        threads = torch.get_num_threads() if self.gpu else set_cpu_threads()
        self.batch = cfg.BATCH if self.gpu else cfg.SMOKE_BATCH
        self.new_tokens = cfg.MAX_NEW_TOKENS if self.gpu else cfg.SMOKE_NEW_TOKENS
        self.runs = cfg.RUNS if self.gpu else min(cfg.RUNS, 1)
        self.configs_dir = configs_dir
        self.backend = cfg.COMPILE_BACKEND or ("inductor" if self.gpu else "aot_eager")
        self.engine = Engine(self.configs_dir, device=str(self.device), host_cache=True,
                             copy_mode="pageable", decode="static", compile_backend=self.backend,
                             max_new_tokens=self.new_tokens,
                             prompt_buckets=[cfg.PROMPT_BUCKET])
        self.static = self.engine.static  # kept: eager_decoding() takes it off the engine
        self.watch = self.static.watch
        self.start_tally = self.watch.tally()
        self.tokenizers: dict[str, Any] = {}
        self.configs: dict[str, Any] = {}
        self.pinned_gbps: float | None = None
        self.warmed: set[str] = set()
        self.agreements: dict[str, dict[str, Any]] = {}
        self.timed: list[dict[str, Any]] = []  # what compiled during each timed run
        report.set("mode", "gpu" if self.gpu else "cpu-smoke")
        report.set("settings", {"models": list(cfg.MODELS), "throughput_model":
                                cfg.THROUGHPUT_MODEL, "batch": self.batch,
                                "max_new_tokens": self.new_tokens, "runs": self.runs,
                                "prompt_bucket": cfg.PROMPT_BUCKET, "compile_backend": self.backend,
                                "dtype": str(self.engine.dtype).removeprefix("torch."),
                                "cpu_threads": threads, "time_limit_s": cfg.TIME_LIMIT_S})

    # --- the environment and the bandwidth ---------------------------------------------------
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
        from benchmarks.comparisons import bandwidth

        self.pinned_gbps = bandwidth(self.device, self.report)

    # --- building, and swapping by each copy mode ----------------------------------------------
    def build(self) -> None:
        """Every model made in memory (on the GPU there), every tensor checked finite there,
        then kept in the host cache at its exact size; only its config and tokenizer written,
        to the temporary folder."""
        import torch

        from sincere.assets.local_tokenizers import save_tokenizer, tokenizer_corpus
        from sincere.assets.models import non_finite_tensors, random_model_and_tokenizer

        corpus = tokenizer_corpus(self.cfg.SEED)
        built, bad = {}, {}
        for alias in self.cfg.MODELS:
            started = time.perf_counter()
            model, tokenizer = random_model_and_tokenizer(
                alias, self.cfg.SEED, tiny=not self.gpu, corpus=corpus, device=str(self.device))
            bad[alias] = non_finite_tensors(model)
            tensors = sum(1 for _ in model.parameters()) + sum(1 for _ in model.buffers())
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
                            "tensors": tensors, "non_finite": bad[alias],
                            "pinning": pinning.how}
            print(f"  {alias}: {built[alias]['bytes'] / 1e9:.2f} GB built in {build_s:.1f} s",
                  flush=True)
        self.report.set("models", built)
        self.report.check("every parameter and buffer finite", not any(bad.values()),
                          "; ".join(f"{a}: {', '.join(b[:3])}" for a, b in bad.items() if b)
                          or ", ".join(f"{a} {built[a]['tensors']} tensors" for a in built))
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
            if pinned.get("ratio") is not None:
                self.report.goal(f"swap ratio {alias}", pinned["ratio"] <= self.cfg.SWAP_RATIO_GOAL,
                                 f"pinned {pinned['median_s']} s / ideal {ideal_s:.4f} s = "
                                 f"{pinned['ratio']} (goal <= {self.cfg.SWAP_RATIO_GOAL})")
            self.report.set("swaps", results)
        fastest = results[self.cfg.MODELS[0]]["fastest"]
        self.engine.copy_mode = self.engine.host.copy_mode = fastest  # for the rest of the check

    # --- throughput, warm-up and agreement -----------------------------------------------------
    def throughput(self) -> None:
        """The three ways on one batch, each written as soon as it is timed (a run cut short
        keeps the ways it timed); then the static engine's agreement with eager decoding."""
        import torch

        from benchmarks.comparisons import free_running_agreement, made_up_prompts, pipeline_seconds
        from sincere.assets.architectures import FULL_SIZE, TINY
        from sincere.assets.models import random_model

        alias, cfg = self.cfg.THROUGHPUT_MODEL, self.cfg
        prompts = made_up_prompts(self.batch, cfg.PROMPT_WORDS, cfg.SEED)
        ways: dict[str, dict[str, Any]] = {}
        result = {"model": alias, "batch": len(prompts), "max_new_tokens": self.new_tokens,
                  "ways": ways}

        def add(way: str, median_s: float, **extra: Any) -> None:
            original_s = ways["hf_pipeline_fp32"]["median_s"] if ways else median_s
            ways[way] = {"median_s": round(median_s, 4),
                         "requests_per_s": round(len(prompts) / median_s, 3),
                         "ratio_to_original": round(original_s / median_s, 3), **extra}
            self.report.set("throughput", result)

        family = (FULL_SIZE if self.gpu else TINY)[alias].family
        fp32 = random_model(self.configs[alias], family, torch.float32, str(self.device),
                            cfg.SEED)
        before = self.watch.tally()
        first_s, original_s = pipeline_seconds(fp32, self.tokenizers[alias], prompts,
                                               self.new_tokens, self.runs)
        self._note_timed("hf_pipeline_fp32", before)  # its first, untimed call included
        del fp32
        if self.gpu:
            torch.cuda.empty_cache()
        add("hf_pipeline_fp32", original_s, first_call_s=round(first_s, 4))
        self.engine.load(alias)
        try:
            with self.engine.eager_decoding():
                eager_s, eager_ids = self._timed(prompts, "eager")
            add("eager", eager_s)
            warm_s = self.engine.warm_up()  # compiles the static engine for its shape
            self.warmed.add(alias)
            static_s, static_ids = self._timed(prompts, "static_compiled")
            result["free_running_agreement"] = round(
                free_running_agreement(static_ids, eager_ids), 4)
            add("static_compiled", static_s, warm_up_s=round(warm_s, 2))
            speedup = ways["static_compiled"]["ratio_to_original"]
            self.report.goal("static compiled / original", speedup >= cfg.SPEEDUP_GOAL,
                             f"{speedup}x at batch {len(prompts)} (goal >= {cfg.SPEEDUP_GOAL}x)")
            self._agreement(alias, prompts)
        finally:
            self.engine.unload()

    def _timed(self, prompts: list[str], label: str) -> tuple[float, list[list[int]]]:
        """One untimed batch, then RUNS timed ones, whose compiles are noted; (median seconds,
        the last's token ids)."""
        times, ids = [], []
        before, fallbacks = None, 0
        for run in range(1 + self.runs):
            if run == 1:
                before, fallbacks = self.watch.tally(), self.static.eager_fallbacks
            result = self.engine.generate(prompts)
            problems = sorted(set(result.errors)) + (["split"] if result.retries else [])
            if problems:
                raise RuntimeError(f"{label}: {len(result.failed)} of {len(prompts)} prompts "
                                   f"failed ({', '.join(problems)})")
            if run:
                times.append(result.seconds)
            ids = result.output_ids
        self._note_timed(label, before, self.static.eager_fallbacks - fallbacks)
        return statistics.median(times), ids

    def _note_timed(self, label: str, before: Any, fallbacks: int = 0) -> None:
        after = self.watch.tally() - before
        self.timed.append({"run": label, "compiles": after.compiles,
                           "graph_recordings": after.graph_recordings,
                           "eager_fallbacks": fallbacks})

    def _agreement(self, alias: str, prompts: list[str]) -> None:
        """Teacher-forced agreement of the resident (warmed) model's static engine with its
        eager decoding, and every logit finite."""
        from benchmarks.comparisons import agreement_runs

        agreement = agreement_runs(self.engine, prompts)
        self.agreements[alias] = agreement
        self.report.set("token_agreement", self.agreements)
        control = agreement["control_fraction"]
        meaning = ("the context decides the tokens" if control < self.cfg.AGREEMENT / 2 else
                   "the context barely moves the tokens: agreement says little here")
        self.report.check(
            f"token agreement {alias}", agreement["fraction"] >= self.cfg.AGREEMENT,
            f"teacher-forced {agreement['fraction']:.4f} of {agreement['tokens']} "
            f"(>= {self.cfg.AGREEMENT}; prefill {agreement['first_step_fraction']}, compiled "
            f"steps {agreement['decode_steps_fraction']}); {agreement['disagreements']} flips, "
            f"widest top-2 gap flipped {agreement['largest_gap_flipped']} (median gap "
            f"{agreement['median_top2_gap']}); control on other prompts {control} ({meaning})")
        self.report.check(f"every logit finite {alias}", agreement["non_finite_logits"] == 0,
                          f"{agreement['non_finite_logits']} not finite in 3 x "
                          f"{agreement['tokens']} steps x vocabulary")

    def warm_up_others(self) -> None:
        """Every model not warmed yet: its warm-up (which compiles it) and its agreement."""
        from benchmarks.comparisons import made_up_prompts

        prompts = made_up_prompts(self.batch, self.cfg.PROMPT_WORDS, self.cfg.SEED + 50)
        for alias in self.cfg.MODELS:
            if alias in self.warmed:
                continue
            self.engine.load(alias)
            try:
                seconds = self.engine.warm_up()
                self.warmed.add(alias)
                self._agreement(alias, prompts)
            finally:
                self.engine.unload()
            print(f"  {alias}: warmed up in {seconds:.1f} s", flush=True)

    # --- swaps through every model after warm-up -----------------------------------------------
    def swap_through(self) -> None:
        """SWAP_ROUNDS rounds over every model, a batch of varied size after each swap, one
        prompt of each model's first batch exactly PROMPT_BUCKET tokens long; then one batch
        whose prompt is a token longer. None may compile or record a graph; the bucket's end
        decodes static, the longer prompt eagerly."""
        from benchmarks.comparisons import made_up_prompts, prompt_of_tokens

        bucket = self.cfg.PROMPT_BUCKET
        self.static.watch.mark()
        fallbacks_before = self.static.eager_fallbacks
        sizes = [self.batch, max(1, self.batch // 2 + 1), 1, max(1, self.batch - 1)]
        batches = failed = at_bucket = 0
        for round_number in range(self.cfg.SWAP_ROUNDS):
            for index, alias in enumerate(self.cfg.MODELS):
                size = sizes[(round_number + index) % len(sizes)]
                prompts = made_up_prompts(size, self.cfg.PROMPT_WORDS,
                                          self.cfg.SEED + 1 + round_number * 7 + index)
                self.engine.load(alias)
                try:
                    if round_number == 0:  # the bucket's last position, in a batch of several
                        prompts[-1] = prompt_of_tokens(
                            lambda text, a=alias: self.engine.count_tokens(a, text), bucket)
                        at_bucket += 1
                    result = self.engine.generate(prompts)
                finally:
                    self.engine.unload()
                batches += 1
                failed += len(result.failed)
                print(f"  {alias}: {len(prompts)} prompts of up to {max(result.prompt_tokens)} "
                      f"tokens in {result.seconds:.2f} s, {len(result.failed)} failed", flush=True)
        static_fallbacks = self.static.eager_fallbacks - fallbacks_before
        counts = self.engine.compile_counts()
        alias = self.cfg.MODELS[0]
        self.engine.load(alias)
        try:
            longer = prompt_of_tokens(lambda text: self.engine.count_tokens(alias, text),
                                      bucket + 1)
            result = self.engine.generate([longer])
        finally:
            self.engine.unload()
        failed += len(result.failed)
        longer_fallbacks = (self.static.eager_fallbacks - fallbacks_before
                            - static_fallbacks)
        after_longer = self.engine.compile_counts()
        self.report.set("compile_counts", after_longer)
        self.report.set("swap_through", {"rounds": self.cfg.SWAP_ROUNDS, "batches": batches + 1,
                                         "failed_prompts": failed,
                                         "prompts_at_bucket_end": at_bucket})
        report = self.report
        report.check("no failed prompt", failed == 0, f"{failed} failed in {batches + 1} batches")
        report.check("no compile after warm-up", after_longer["compiles_after_warm_up"] == 0,
                     f"{counts['compiles_after_warm_up']} compiles in {batches} batches across "
                     f"{batches} swaps, {after_longer['compiles_after_warm_up']} with the longer "
                     f"prompt's")
        if self.gpu:
            report.check("no CUDA-graph recording after warm-up",
                         after_longer["graph_recordings_after_warm_up"] == 0,
                         f"{after_longer['graph_recordings_after_warm_up']} recordings")
        report.check("prompts up to the bucket's end decode static, longer ones eagerly",
                     static_fallbacks == 0 and longer_fallbacks == 1,
                     f"{at_bucket} batches with a prompt of exactly {bucket} tokens: "
                     f"{static_fallbacks} decoded eagerly (0 expected); one of {bucket + 1} "
                     f"tokens: {longer_fallbacks} (1 expected)")
        report.check("arenas allocated once",
                     counts["weights_arena_allocations"] == counts["kv_arena_allocations"] == 1,
                     f"weights {counts['weights_arena_allocations']}, "
                     f"KV cache {counts['kv_arena_allocations']}")

    # --- optional ---------------------------------------------------------------------------
    def larger_batch(self) -> None:
        """The static engine at twice the batch: a new shape, warmed up (compiled) first, then
        timed like the throughput part (its compiles noted)."""
        from benchmarks.comparisons import made_up_prompts

        alias = self.cfg.THROUGHPUT_MODEL
        prompts = made_up_prompts(2 * self.batch, self.cfg.PROMPT_WORDS, self.cfg.SEED + 99)
        self.engine.set_batch_buckets({alias: [self.batch, 2 * self.batch]})
        self.engine.load(alias)
        try:
            warm_s = self.engine.warm_up()
            seconds, _ids = self._timed(prompts, "static_compiled_larger_batch")
        finally:
            self.engine.unload()
        self.report.set("larger_batch", {"model": alias, "batch": len(prompts),
                                         "warm_up_s": round(warm_s, 2),
                                         "median_s": round(seconds, 4),
                                         "requests_per_s": round(len(prompts) / seconds, 3)})

    # --- what compiled, from first to last --------------------------------------------------
    def summary(self) -> None:
        """Every model warmed up compiled, through the backend asked for; on a GPU every
        warm-up shape recorded its CUDA graph and no CUDA graph was skipped; no timed run
        compiled."""
        warm_ups = self.static.warm_ups
        total = self.watch.tally() - self.start_tally
        per_model = {alias: {"compiles": sum(s["compiles"] for s in shapes),
                             "graph_recordings": (None if any(s["graph_recordings"] is None
                                                              for s in shapes)
                                                  else sum(s["graph_recordings"] for s in shapes)),
                             "backend": sorted({s["backend"] for s in shapes} - {"none"}),
                             "failed_prompts": sum(s["failed_prompts"] for s in shapes),
                             "shapes": shapes}
                     for alias, shapes in warm_ups.items()}
        ran = sorted({b for row in per_model.values() for b in row["backend"]})
        self.report.set("compile", {"backend_asked": self.backend, "backend_ran": ran,
                                    "per_model": per_model, "timed_runs": self.timed,
                                    "whole_check": total.as_dict()})
        report = self.report
        if not per_model:
            report.skip("compile checks", "no model was warmed up")
            return
        report.check("every model compiled in its warm-up",
                     all(r["compiles"] >= 1 and r["failed_prompts"] == 0
                         for r in per_model.values()),
                     ", ".join(f"{a} {r['compiles']}" + (f" ({r['failed_prompts']} failed)"
                                                         if r["failed_prompts"] else "")
                               for a, r in per_model.items()))
        report.check(f"the backend that ran is {self.backend}",
                     all(r["backend"] == [self.backend] for r in per_model.values()),
                     ", ".join(f"{a} {'+'.join(r['backend']) or 'nothing'}"
                               for a, r in per_model.items()))
        if self.gpu:
            shapes = [(a, s) for a, rows in warm_ups.items() for s in rows]
            report.check("every warm-up shape recorded its CUDA graph",
                         all((s["graph_recordings"] or 0) >= 1 for _a, s in shapes),
                         ", ".join(f"{a} batch {s['shape']['batch']} x {s['shape']['cache_len']}"
                                   f": {s['graph_recordings']}" for a, s in shapes))
            report.check("no CUDA graph skipped", total.cudagraph_skips == 0,
                         f"{total.cudagraph_skips} skipped (inductor's counter) in the whole "
                         f"check")
        compiled = [t for t in self.timed if t["compiles"]]
        report.check("no compile in a timed run", not compiled,
                     ", ".join(f"{t['run']} {t['compiles']}" for t in compiled)
                     or f"{len(self.timed)} timed ways, 0 compiles")
        static = [t for t in self.timed if t["run"].startswith("static")]
        if static:
            report.check("every timed static batch decoded static",
                         not any(t["eager_fallbacks"] for t in static),
                         ", ".join(f"{t['run']}: {t['eager_fallbacks']} batches decoded eagerly"
                                   for t in static))


def format_report(data: dict[str, Any]) -> str:
    """The table printed at the end and saved as gpu_check.txt."""
    env = data.get("environment", {})
    lines = [f"GPU check ({data.get('mode', '?')}): {env.get('gpu_name') or env.get('cpu_model')}"
             f", cc_mode {data.get('cc_mode', '?')}, torch {env.get('torch')}, transformers "
             f"{env.get('transformers')}: {data.get('status', '?').upper()} in "
             f"{data.get('elapsed_s') or 0:.0f} s"]
    settings = data.get("settings", {})
    if settings:
        lines.append(f"{settings['dtype']}, batch {settings['batch']}, "
                     f"{settings['max_new_tokens']} new tokens, compile backend "
                     f"{settings['compile_backend']}"
                     + (f" (from the environment: {', '.join(settings['from_environment'])})"
                        if settings.get("from_environment") else ""))
    parts = data.get("parts", {})
    lines += [f"part {part:<13}{row['status']:<10}"
              + (f"{row['seconds']:>7.1f} s" if row.get("seconds") is not None else "")
              for part, row in parts.items()]
    lines += [f"part {part:<13}not reached" for part in settings.get("parts", [])
              if part not in parts]
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
        lines.append(f"{t['model']}, batch {t['batch']}, {t['max_new_tokens']} new tokens"
                     + (f" (free-running agreement {t['free_running_agreement']})"
                        if "free_running_agreement" in t else "") + ":")
        for way, row in t["ways"].items():
            lines.append(f"  {way:<20}{row['median_s']:>9.3f} s{row['requests_per_s']:>9.2f} "
                         f"req/s{row['ratio_to_original']:>8.2f}x")
    for alias, a in data.get("token_agreement", {}).items():
        lines.append(f"agreement {alias:<12} teacher-forced {a['fraction']} of {a['tokens']}, "
                     f"control {a['control_fraction']}, flips {a['disagreements']} (widest gap "
                     f"{a['largest_gap_flipped']}), top logit diff median "
                     f"{a['median_top_logit_diff']} max {a['max_top_logit_diff']}, "
                     f"non-finite {a['non_finite_logits']}")
    compile_block = data.get("compile")
    if compile_block:
        lines.append(f"compile: asked {compile_block['backend_asked']}, ran "
                     f"{'+'.join(compile_block['backend_ran']) or 'nothing'}; "
                     + ", ".join(f"{a} {r['compiles']} compiles/{r['graph_recordings']} graphs"
                                 for a, r in compile_block["per_model"].items())
                     + f"; whole check {compile_block['whole_check']['compiles']} compiles, "
                       f"{compile_block['whole_check']['cudagraph_skips']} CUDA graphs skipped")
    if "compile_counts" in data:
        c = data["compile_counts"]
        lines.append(f"after warm-up: {c['compiles_after_warm_up']} compiles, "
                     f"{c['graph_recordings_after_warm_up']} CUDA-graph recordings, "
                     f"{c['eager_fallbacks']} batches decoded eagerly")
    lines += [f"check {'ok    ' if c['passed'] else 'FAILED'} {c['name']}: {c['detail']}"
              for c in data.get("checks", [])]
    lines += [f"goal  {'met    ' if g['met'] else 'not met'} {g['name']}: {g['detail']}"
              for g in data.get("goals", [])]
    lines += [f"skipped {s['part']}: {s['reason']}" for s in data.get("skipped", [])]
    lines += [f"error in {e['part']}: {e['error']}: {e['message']}" for e in data.get("errors", [])]
    return "\n".join(lines)


def environment_flags(constants: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """``--flag value`` for each constant set in the environment under its own name (a list
    constant takes the words of the value), to go before the command line's own flags."""
    from sincere.cli import flag_name

    flags: list[str] = []
    for name, default in constants.items():
        if name not in environ:
            continue
        value = environ[name]
        words = value.replace(",", " ").split() if isinstance(default, list) else [value]
        flags += [flag_name(name), *words]
    return flags


def _constants() -> dict[str, Any]:
    """The constants block (what parse_constants makes flags of)."""
    return {k: v for k, v in globals().items() if re.fullmatch(r"[A-Z][A-Z0-9_]*", k)}


def argument_problem(cfg: Any) -> str | None:
    """Why the constants cannot run, or None."""
    if not cfg.MODELS or cfg.THROUGHPUT_MODEL not in cfg.MODELS:
        return f"THROUGHPUT_MODEL {cfg.THROUGHPUT_MODEL!r} must be one of MODELS"
    unknown = sorted(set(cfg.PARTS) - set(_ORDER))
    if unknown:
        return f"unknown part(s) {', '.join(unknown)}; the parts: {', '.join(_ORDER)}"
    return None


def measure(cfg: Any, out_dir: Path, from_environment: list[str]) -> int:
    """The measuring process: every part chosen, in turn; 0 when every check passed."""
    import torch

    if cfg.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"DEVICE {cfg.DEVICE!r}, but torch {torch.__version__} (CUDA build "
              f"{torch.version.cuda or 'none'}) sees no GPU; without DEVICE the check runs its "
              f"smoke mode on the CPU", file=sys.stderr)
        return 2
    report = Report(out_dir, "gpu_check", format_report)
    with tempfile.TemporaryDirectory(prefix="gpu_check_configs_") as configs:
        try:
            check = GpuCheck(cfg, report, Path(configs))
        except Exception as exc:  # noqa: BLE001 - reported in the results like any part's error
            report.error("setup", exc)
            report.write(final=True)
            print(f"setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        report.data["settings"]["from_environment"] = from_environment
        chosen = parts_to_run(cfg.PARTS, cfg.OPTIONAL)
        report.data["settings"]["parts"] = chosen
        print(f"gpu check: {report.data['mode']} on {check.device}, parts "
              f"{', '.join(chosen)}; results in {out_dir}", flush=True)
        work: dict[str, Callable[[], None]] = {
            "environment": check.environment, "bandwidth": check.bandwidth,
            "build": check.build, "swaps": check.swaps, "throughput": check.throughput,
            "warm_up": check.warm_up_others, "swap_through": check.swap_through,
            "larger_batch": check.larger_batch, "summary": check.summary}
        done: set[str] = set()
        for part in chosen:
            missing = [need for need in _NEEDS.get(part, []) if need not in done]
            if part == "summary" and "build" not in done:
                missing = ["build"]
            if missing:
                report.skip(part, f"needs {', '.join(missing)}, which did not complete")
            elif part in _OPTIONAL_PARTS and report.elapsed_s() >= cfg.OPTIONAL_UNTIL_S:
                report.skip(part, f"optional parts start only before {cfg.OPTIONAL_UNTIL_S:g} s "
                            f"(now {report.elapsed_s():.0f} s)")
            elif report.run(part, work[part]):
                done.add(part)
    report.write(final=True)
    print(format_report(report.data), flush=True)
    return 1 if report.failed() else 0


def main(argv: list[str] | None = None) -> int:
    """Check the arguments, then run the measuring process under the time limit (this
    process) or be it (the child, marked by _WORKER_ENV); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from_env = environment_flags(_constants(), os.environ)
    cfg = parse_constants(globals(), from_env + argv)
    problem = argument_problem(cfg)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    out_dir = Path(cfg.OUT_DIR or os.environ.get("OUT") or "gpu_check_out")
    env_names = [name for name in _constants() if name in os.environ]
    if os.environ.get(_WORKER_ENV) == "1":
        return measure(cfg, out_dir, env_names)
    if env_names:
        print("from the environment: " + ", ".join(f"{n}={os.environ[n]}" for n in env_names),
              flush=True)
    env = {**os.environ, _WORKER_ENV: "1", "PYTHONUNBUFFERED": "1"}
    return supervise([sys.executable, "-u", str(Path(__file__).resolve()), *argv], out_dir,
                     "gpu_check", cfg.TIME_LIMIT_S, format_report, env=env)


if __name__ == "__main__":
    sys.exit(main())
