"""The inference engine the profilers and the server share (SPEC section 7).

One model is resident on the device at a time. Which one, and where the others are (their
folders, the host cache), is ``sincere.engine.residency``'s: ``load`` reads a model from disk,
or, when its weights are already in the host cache, copies them from host RAM (pinned where CC is
off), which is what a swap costs; ``unload`` frees the device. This module generates:
``generate`` runs a batch greedily with left padding and, by default, exactly ``max_new_tokens``
new tokens per prompt so that batch times are comparable; only an out-of-memory splits the batch
in halves and retries; any other error fails the batch's prompts at once with its class name.
Nothing is ever dropped silently. ``Engine`` is the one object the engine's process
(``sincere.engine.process``), the profilers and the server call.

Nothing here logs or raises prompt or generated text: only counts, lengths and error class names.
The engine is not thread-safe; the server calls it from one thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
import transformers

from sincere.engine.host_cache import HostCache
from sincere.engine.model_folders import ModelFolders
from sincere.engine.outcomes import (
    OOM_CLASS,
    OOM_ERROR_NAME,
    BatchResult,
    EngineError,
    LoadResult,
    run_in_parts,
)
from sincere.engine.residency import Residency
from sincere.engine.static_decode import (
    DEFAULT_PROMPT_BUCKETS,
    DecodeShape,
    StaticDecoder,
)
from sincere.engine.weights import PinReport

log = logging.getLogger("sincere.engine")

__all__ = ["OOM_ERROR_NAME", "BatchResult", "Engine", "EngineError", "LoadResult",
           "set_cpu_threads"]

DECODE_MODES = ("eager", "static")


def set_cpu_threads(threads: int = 0) -> int:
    """Set torch's threads for a CPU engine: ``threads``, or all cores but one (at least one)
    when 0, leaving a core to the HTTP, scheduler and monitor threads; the number set. The
    server and the profilers call it alike, so that profiles match the server's batch times."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)  # the cores this process may use (a container's share)
    count = threads if threads > 0 else max(1, cores - 1)
    torch.set_num_threads(count)
    return count


class Engine:
    """Load, unload and run the models of one folder on one device: which model is where is
    ``self.residency``'s (sincere.engine.residency), generating for a batch is this class's.

    ``oom_batch_limit`` is a testing knob: a batch of more prompts than that raises
    out-of-memory (0 makes every batch, even a single prompt, run out; None: no limit).
    """

    def __init__(self, models_dir: Path, device: str | None = None,
                 dtype: torch.dtype | None = None, host_cache: bool = True,
                 copy_mode: str | None = None, cc_mode: str = "unknown",
                 oom_batch_limit: int | None = None, max_new_tokens: int = 50,
                 exact_new_tokens: bool = True, copy_threads: int = 0,
                 copy_chunk_mb: int = 64, decode: str = "eager",
                 compile_backend: str = "inductor",
                 prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS) -> None:
        self.folders = ModelFolders(models_dir)
        self.models_dir = self.folders.models_dir
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.is_cuda = self.device.type == "cuda"
        self.dtype = dtype or (torch.bfloat16 if self.is_cuda else torch.float32)
        self.host_cache = host_cache
        self.cc_mode = cc_mode
        # How a swap copies the host cache to the device (sincere.engine.weights.COPY_MODES). The
        # profile says which is fastest on this machine (sincere.engine.load_paths measures it); the
        # default is a guess: pinned memory on a GPU without CC, where it is ~8x faster than
        # pageable, chunked copies from threads under CC, a plain copy on a CPU.
        self.copy_mode = copy_mode or ("pageable" if not self.is_cuda
                                       else "chunked" if cc_mode == "on" else "pinned")
        self.copy_threads = copy_threads or 4  # threads (and streams) of the chunked mode
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
        # "static": persistent static KV caches and the decoding step compiled with
        # torch.compile (CUDA graphs on a GPU), for bucketed shapes (sincere.engine.static_decode).
        # The compiled code lives on the module, which the host cache keeps across swaps, so a
        # model compiles during its warm-up and not again, swapped out and back or not.
        self.decode = decode
        self.compile_backend = compile_backend
        self.static = (StaticDecoder(self.device, self.dtype, prompt_buckets, compile_backend)
                       if decode == "static" else None)
        self.oom_batch_limit = oom_batch_limit
        self.max_new_tokens = max_new_tokens
        self.exact_new_tokens = exact_new_tokens
        self.host = HostCache(self.device, self.copy_mode, self.copy_threads,
                              copy_chunk_mb * 2**20)
        self.residency = Residency(self.folders, self.host, self.device, self.dtype, host_cache)

    # --- which model is where (sincere.engine.residency) ------------------------------------

    def available_models(self) -> list[str]:
        """Aliases of the model folders in ``models_dir`` and of those added."""
        return self.residency.available_models()

    def add_model_path(self, alias: str, path: Path) -> None:
        """Serve the model folder ``path`` (Hugging Face layout) under ``alias``, wherever it is."""
        self.residency.add_model_path(alias, path)

    @property
    def resident(self) -> str | None:
        """The alias of the model on the device, or None."""
        return self.residency.resident

    @property
    def host_cached(self) -> list[str]:
        """Aliases whose weights are in the host cache."""
        return sorted(self.host.entries)

    @property
    def _model(self) -> torch.nn.Module | None:
        return self.residency.model

    def load(self, alias: str) -> LoadResult:
        """Put ``alias`` on the device (from the host cache when there, else disk); seconds."""
        return self.residency.load(alias)

    def unload(self) -> float:
        """Free the device of the resident model (its host copy stays); seconds."""
        return self.residency.unload()

    def swap(self, alias: str) -> LoadResult:
        """Unload the resident model (if any) and load ``alias``: the server's swap as one call,
        so that an engine in a process of its own is waited for once, and does both while the
        caller's threads answer the batch before (sincere.engine.process)."""
        return self.residency.swap(alias)

    def prefetch(self, alias: str) -> float:
        """Fill the host cache from disk without touching the device; seconds (0 if cached)."""
        return self.residency.prefetch(alias)

    def adopt(self, alias: str, model: torch.nn.Module,
              tokenizer: transformers.PreTrainedTokenizerBase) -> PinReport:
        """Keep a model built in memory (random weights made on the GPU, say) in the host cache
        under ``alias``, as if it had been read from a folder; how its copy was pinned."""
        return self.residency.adopt(alias, model, tokenizer)

    def pinning(self, alias: str) -> PinReport:
        """How ``alias``'s host copy was pinned ("none" when it was not)."""
        return self.residency.pinning(alias)

    def evict(self, alias: str) -> None:
        """Drop ``alias``'s host copy (a resident model stays on the device until unloaded)."""
        self.residency.evict(alias)

    def reserve(self, aliases: list[str] | None = None) -> int:
        """Size the device memory of swaps once, before the first, for the largest of
        ``aliases`` (default: every host-cached model): the weights arena, and for the static
        engine the KV arena for their largest warm-up shape, so that no later swap or batch
        allocates; the bytes reserved."""
        chosen = list(self.host.entries) if aliases is None else aliases
        modules = self.residency.cached_modules(chosen)
        kv_bytes = 0 if self.static is None else self.static.reserve(modules,
                                                                     self.max_new_tokens)
        return self.host.reserve(chosen) + kv_bytes

    def set_batch_buckets(self, buckets: Mapping[str, Sequence[int]]) -> None:
        """Static engine: the batch sizes each model is compiled for (a batch is padded up to
        the smallest that holds it; see sincere.engine.static_decode.batch_buckets)."""
        if self.static is not None:
            self.static.set_batch_buckets(buckets)

    def compile_counts(self) -> dict[str, int | None]:
        """Static engine: compiles and CUDA-graph recordings since the last warm-up, eager
        fallbacks and KV arena allocations; with the weights arena's allocations (any engine)."""
        counts = {} if self.static is None else self.static.counts()
        return {**counts, "weights_arena_allocations": self.host.arena.allocations}

    # --- generation ---------------------------------------------------------------------------

    def count_tokens(self, alias: str, text: str) -> int:
        """Prompt tokens of ``text`` under ``alias``'s tokenizer (BOS included, as generate)."""
        return len(self.residency.tokenizer_of(alias)(text)["input_ids"])

    def _generate_batch(self, prompts: list[str], max_new_tokens: int,
                        logits_processor: transformers.LogitsProcessor | None = None
                        ) -> tuple[list[str], list[int], list[int], list[list[int]]]:
        assert self._model is not None and self.residency.tokenizer is not None
        if self.oom_batch_limit is not None and len(prompts) > self.oom_batch_limit:
            raise OOM_CLASS(f"batch of {len(prompts)} exceeds oom_batch_limit="
                            f"{self.oom_batch_limit}")
        tokenizer = self.residency.tokenizer
        encoded = tokenizer(prompts, return_tensors="pt", padding=True)
        input_ids = encoded["input_ids"].to(self.device)
        attention_mask = encoded["attention_mask"].to(self.device)
        options: dict[str, object] = {"max_new_tokens": max_new_tokens, "do_sample": False,
                                      "num_beams": 1, "pad_token_id": tokenizer.pad_token_id}
        if self.exact_new_tokens:
            options["min_new_tokens"] = max_new_tokens  # EOS masked until the last step
        if logits_processor is not None:  # runs after transformers' own, outside the compile
            options["logits_processor"] = transformers.LogitsProcessorList([logits_processor])
        count = len(prompts)
        if self.static is not None:  # bucketed: padded rows, the model's persistent cache
            input_ids, attention_mask = self.static.prepare(
                self.resident, self._model, options, input_ids, attention_mask, max_new_tokens)
        with torch.inference_mode():
            output = self._model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                          **options)
        new_tokens = output[:count, input_ids.shape[1]:].cpu()
        counts = [self._real_new_tokens(row) for row in new_tokens]
        ids = [row[:n].tolist() for row, n in zip(new_tokens, counts, strict=True)]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        prompt_tokens = attention_mask[:count].sum(dim=1).tolist()
        return texts, prompt_tokens, counts, ids

    def warm_up(self) -> float:
        """Run the resident model at every shape it can meet before anything is timed: for the
        static engine each of its batch buckets by each prompt bucket, which compiles its
        decoding step for all of them; then count compiles and graph recordings from zero
        (``compile_counts``). What each shape compiled, and how many of its prompts failed,
        is kept in ``static.warm_ups[alias]``. The eager engine has nothing to compile: one
        batch. Seconds."""
        if self._model is None:
            raise EngineError("no model is resident: load() one first")
        started_s = time.perf_counter()
        shapes = (self.static.warm_shapes(self.resident, self.max_new_tokens) if self.static
                  else [DecodeShape(1, 16, 16 + self.max_new_tokens)])
        records = []
        for shape in shapes:
            before = self.static.watch.tally() if self.static is not None else None
            result = self.generate([self._made_up_text(shape.prompt_bucket)] * shape.batch)
            if before is not None:
                records.append({"shape": dataclasses.asdict(shape),
                                "seconds": round(result.seconds, 3),
                                "failed_prompts": len(result.failed),
                                **(self.static.watch.tally() - before).as_dict()})
        if self.static is not None:
            self.static.warm_ups[self.resident] = records
            self.static.watch.mark()
        seconds = time.perf_counter() - started_s
        log.info("warmed up %s at %d shapes in %.1f s", self.resident, len(shapes), seconds)
        return seconds

    @contextlib.contextmanager
    def eager_decoding(self) -> Iterator[None]:
        """Within: batches decode as the eager engine's do (no static cache, nothing compiled),
        so that the two can be compared on the very same weights."""
        static, self.static = self.static, None
        try:
            yield
        finally:
            self.static = static

    def _made_up_text(self, tokens: int) -> str:
        """Made-up text of at most ``tokens`` tokens, and close to it (no user prompt)."""
        words = tokens
        while words > 1 and self.count_tokens(self.resident, " ".join(["w"] * words)) > tokens:
            words = max(1, words - max(1, words // 8))
        return " ".join(["w"] * words)

    def _real_new_tokens(self, row: torch.Tensor) -> int:
        """New tokens of one row up to and including its first EOS (the rest is padding)."""
        if self.exact_new_tokens:
            return int(row.numel())
        eos = self._model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        for position, token in enumerate(row.tolist()):
            if token in eos_ids:
                return position + 1
        return int(row.numel())

    def _free_after_oom(self) -> None:
        gc.collect()
        if self.is_cuda:
            torch.cuda.empty_cache()

    def generate(self, prompts: list[str], max_new_tokens: int | None = None,
                 logits_processor: transformers.LogitsProcessor | None = None) -> BatchResult:
        """Run a batch; an out-of-memory splits it in halves and retries (down to single
        prompts); any other error fails the prompts of the part it hit at once, with its error
        class name (sincere.engine.outcomes.run_in_parts). The engine stays usable either way.

        ``logits_processor`` sees each step's scores after transformers' own processors (a
        static batch's padding rows last); the GPU check records and forces tokens with it."""
        if self._model is None:
            raise EngineError("no model is resident: load() one first")
        new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        started_s = time.perf_counter()
        extra = {} if logits_processor is None else {"logits_processor": logits_processor}
        parts = run_in_parts(
            lambda indices: self._generate_batch([prompts[i] for i in indices], new_tokens,
                                                 **extra),
            len(prompts), self._free_after_oom)
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started_s
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.is_cuda else None
        failed = sorted(parts.errors)
        for i in failed:  # still report how long a failed prompt was
            parts.prompt_tokens[i] = self.count_tokens(self.resident, prompts[i])
        return BatchResult(texts=parts.texts, prompt_tokens=parts.prompt_tokens,
                           output_tokens=parts.output_tokens, seconds=seconds,
                           retries=parts.retries, peak_mem_gib=peak, failed=failed,
                           errors=[parts.errors[i] for i in failed],
                           output_ids=parts.output_ids)

    def chat_template_prompt(self, alias: str, messages: list[dict[str, str]]) -> str | None:
        """A chat rendered by ``alias``'s chat template with the assistant's turn opened, as
        the prompt ``generate`` takes; None when its tokenizer has no template. A leading BOS
        the template writes is dropped where the tokenizer adds its own, so it is not doubled."""
        tokenizer = self.residency.tokenizer_of(alias)
        if not getattr(tokenizer, "chat_template", None):
            return None
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos) and tokenizer("")["input_ids"][:1] == [
                tokenizer.bos_token_id]:
            text = text[len(bos):]
        return text
