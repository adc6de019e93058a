"""Static-cache compiled decoding that compiles during warm-up and never afterwards.

``generate`` with a ``StaticCache`` compiles the model's decoding step (torch.compile; CUDA graphs
with inductor's "reduce-overhead" on a GPU). The compiled step's shapes are the batch and the
cache length, not the prompt's: transformers builds the 4-D attention mask at the cache's full
length outside the compiled region and runs the prefill eagerly (5.17 and 5.24 alike). Left to
itself transformers 5.x makes a new ``StaticCache`` at every ``generate`` call, sized
``max(this call's length, the longest so far)``, so a longer prompt recompiles inside a timed
batch and every call's cache has new addresses, which CUDA graphs record anew. Here instead:

- the cache length is fixed by buckets: a batch whose longest prompt has ``n`` tokens uses the
  smallest prompt bucket ``p >= n`` and a cache of ``p + max_new_tokens`` positions (a longer
  prompt is decoded eagerly, without compiling, and counted);
- batch sizes are bucketed per model (the best batch and a few below it; a batch is padded up
  to its bucket with copies of its first prompt, whose outputs are dropped);
- one persistent ``StaticCache`` per (model, batch bucket, cache length), passed to ``generate``
  and reset before each call, with its tensors cut from one KV arena (sincere.engine.arena) sized
  once for the largest need: the same addresses at every call and every swap;
- a warm-up runs every (batch bucket, prompt bucket) of every served model before anything is
  timed, and Dynamo's recompile limit is raised to what that takes (three models of two
  families share one forward code object: granite is a Llama).

``CompileWatch`` counts Dynamo compiles and CUDA-graph recordings through torch's compile
callbacks, and reads torch's own counters for what ran below Dynamo (AOTAutograd, inductor) and
for CUDA graphs that inductor skipped, so that "compiled in warm-up, with the backend asked
for, and never afterwards" is measured, not assumed. The warm-up's counts are kept per model
and shape (``StaticDecoder.warm_ups``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from sincere.engine.arena import DeviceArena, aligned

log = logging.getLogger("sincere.engine")

DEFAULT_PROMPT_BUCKETS = (128, 512)  # prompt tokens; cache length = bucket + max_new_tokens
BUCKETS_BELOW_BEST = 4  # batch buckets: the best batch B and B/2, B/4, ... this many halvings


def batch_buckets(best_batch: int, below: int = BUCKETS_BELOW_BEST) -> list[int]:
    """The best batch and up to ``below`` halvings of it (at least 1), ascending."""
    sizes = {max(1, best_batch >> k) for k in range(below + 1)}
    return sorted(sizes)


def bucket_for(value: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket >= ``value``, or None when ``value`` is above every bucket."""
    return next((b for b in sorted(buckets) if b >= value), None)


def cache_argument(module: torch.nn.Module) -> str:
    """The keyword ``generate`` takes a cache by: ``past_key_values`` in transformers 5.17,
    ``cache`` in 5.24 (where the old name still works with a deprecation warning); the model's
    own ``forward`` names it the same way."""
    parameters = inspect.signature(type(module).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@dataclass(frozen=True)
class CompileTally:
    """What the compile stack had done by one moment, or between two (``later - earlier``).

    ``compiles``: Dynamo frame compiles; ``graph_recordings``: CUDA-graph recordings (None
    where this torch has no callback for them); ``aot_compiles``: graphs AOTAutograd compiled
    (cache hits included); ``fx_graph_lookups``: inductor's FX-graph cache hits, misses and
    bypasses, and ``fx_compiles``: inductor's ``compile_fx_inner`` calls (the first misses a
    graph loaded from AOTAutograd's cache, the second counts nothing with the FX-graph cache
    off: ``inductor_compiles`` takes the larger); ``cudagraph_skips``: graphs inductor was
    asked to run as CUDA graphs and ran without (input mutation, a CPU tensor, the re-record
    limit: its own counter)."""

    compiles: int
    graph_recordings: int | None
    aot_compiles: int
    fx_graph_lookups: int
    fx_compiles: int
    cudagraph_skips: int

    def __sub__(self, earlier: CompileTally) -> CompileTally:
        values = {}
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(earlier, field.name)
            values[field.name] = None if mine is None or theirs is None else mine - theirs
        return CompileTally(**values)

    @property
    def inductor_compiles(self) -> int:
        return max(self.fx_graph_lookups, self.fx_compiles)

    def backend(self) -> str:
        """The backend the graphs counted went through: ``inductor``, ``aot_eager``
        (AOTAutograd without inductor), ``eager`` (Dynamo alone) or ``none`` (no compile)."""
        if self.inductor_compiles > 0:
            return "inductor"
        if self.aot_compiles > 0:
            return "aot_eager"
        return "eager" if self.compiles > 0 else "none"

    def as_dict(self) -> dict[str, Any]:
        """The counts, with ``inductor_compiles`` and ``backend``, for a JSON file."""
        return {"compiles": self.compiles, "graph_recordings": self.graph_recordings,
                "aot_compiles": self.aot_compiles, "inductor_compiles": self.inductor_compiles,
                "cudagraph_skips": self.cudagraph_skips, "backend": self.backend()}


def _torch_counters() -> tuple[int, int, int, int]:
    """(AOTAutograd compiles, FX-graph cache lookups, compile_fx_inner calls, CUDA graphs
    skipped) from torch's own process-wide counters."""
    from torch._dynamo import utils as dynamo_utils

    counters = dynamo_utils.counters
    inductor = counters["inductor"]
    lookups = sum(inductor[f"fxgraph_cache_{k}"] for k in ("hit", "miss", "bypass"))
    timings = getattr(dynamo_utils, "compilation_time_metrics", {})
    return (int(counters["aot_autograd"]["ok"]), int(lookups),
            len(timings.get("compile_fx_inner", ())), int(inductor["cudagraph_skips"]))


class CompileWatch:
    """Dynamo compiles and CUDA-graph recordings in this process, counted through
    ``torch._dynamo.callback_handler`` (a start callback per compile or recording); ``mark``
    remembers the counts, ``since_mark`` tells what came after. Counts are None where this
    torch has no such callbacks."""

    def __init__(self) -> None:
        self.compiles = 0
        self.graph_recordings = 0
        self._mark = (0, 0)
        self._mark_skips = _torch_counters()[3]
        handler = getattr(torch._dynamo, "callback_handler", None)
        self.available = handler is not None
        # Graph recordings are counted only where torch has their trigger (2.6 on); elsewhere
        # they are None, never a vacuous 0.
        triggers = getattr(getattr(torch._dynamo, "callback", None), "CallbackTrigger", None)
        self.counts_graphs = self.available and hasattr(triggers, "CUDAGRAPH_RECORDING")
        if handler is not None:
            callback = _counting_callback(weakref.ref(self))
            handler.register_start_callback(callback)
            weakref.finalize(self, handler.remove_start_callback, callback)

    def mark(self) -> None:
        """From now on ``since_mark`` counts."""
        self._mark = (self.compiles, self.graph_recordings)
        self._mark_skips = _torch_counters()[3]

    def skips_since_mark(self) -> int:
        """CUDA graphs inductor skipped since ``mark`` (its counter; 0 without CUDA graphs)."""
        return _torch_counters()[3] - self._mark_skips

    def since_mark(self) -> dict[str, int | None]:
        """Compiles and graph recordings since ``mark``."""
        if not self.available:
            return {"compiles": None, "graph_recordings": None}
        return {"compiles": self.compiles - self._mark[0],
                "graph_recordings": (self.graph_recordings - self._mark[1]
                                     if self.counts_graphs else None)}

    def tally(self) -> CompileTally:
        """Everything counted so far, process-wide (subtract an earlier tally for a span)."""
        aot, lookups, fx_compiles, skips = _torch_counters()
        return CompileTally(self.compiles, self.graph_recordings if self.counts_graphs else None,
                            aot, lookups, fx_compiles, skips)


def _counting_callback(ref: weakref.ref) -> object:
    def on_start(args: object) -> None:
        watch = ref()
        trigger = getattr(getattr(args, "callback_trigger", None), "name", "")
        if watch is None:
            return
        if trigger == "DYNAMO":
            watch.compiles += 1
        elif trigger == "CUDAGRAPH_RECORDING":
            watch.graph_recordings += 1
    return on_start


def raise_recompile_limit(entries: int) -> int:
    """Let Dynamo keep at least ``entries`` compiled versions of one code object (default 8,
    which the three served models share); the limit set."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    limit = max(int(getattr(config, name)), entries)
    setattr(config, name, limit)
    for total in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, total):
            setattr(config, total, max(int(getattr(config, total)), 4 * limit))
            break
    return limit


@dataclass(frozen=True)
class DecodeShape:
    """What a batch is compiled for: the bucketed batch size and the cache length."""

    batch: int
    prompt_bucket: int
    cache_len: int


def _kv_geometry(module: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a decoder's self-attention."""
    config = module.config.get_text_config(decoder=True)
    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, heads, head_dim


def kv_bytes(module: torch.nn.Module, batch: int, cache_len: int, dtype: torch.dtype) -> int:
    """Arena bytes of a static cache of ``batch`` rows and ``cache_len`` positions."""
    layers, heads, head_dim = _kv_geometry(module)
    one = aligned(batch * heads * cache_len * head_dim * torch.empty((), dtype=dtype).itemsize)
    return 2 * layers * one


def _bind(layer: object, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Initialise a ``StaticLayer`` now, on the arena's tensors instead of the zeros it would
    allocate at its first update. Its own ``lazy_initialization`` sets its attributes (run on
    the meta device, so it allocates nothing), then the tensors are put in place and marked as
    static addresses, as it does itself (so CUDA graphs take them as fixed inputs)."""
    meta = torch.empty((keys.shape[0], keys.shape[1], 1, keys.shape[3]), dtype=keys.dtype,
                       device="meta")
    layer.lazy_initialization(meta, meta)
    layer.device = keys.device
    layer.keys, layer.values = keys, values
    layer.cumulative_length = torch.zeros((), dtype=torch.long, device=keys.device)
    for tensor in (layer.keys, layer.values, layer.cumulative_length):
        torch._dynamo.mark_static_address(tensor)


class StaticDecoder:
    """The persistent caches, their arena, the buckets and the counters of one engine."""

    def __init__(self, device: torch.device, dtype: torch.dtype,
                 prompt_buckets: Iterable[int] = DEFAULT_PROMPT_BUCKETS,
                 compile_backend: str = "inductor") -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.prompt_buckets = sorted({int(p) for p in prompt_buckets})
        if not self.prompt_buckets or self.prompt_buckets[0] < 1:
            raise ValueError("prompt_buckets must hold positive token counts")
        self.compile_backend = compile_backend
        self.batch_buckets: dict[str, list[int]] = {}
        self.kv_arena = DeviceArena(self.device, "kv cache")
        self.watch = CompileWatch()
        self.eager_fallbacks = 0  # batches whose prompts were longer than every bucket
        # Per model, one entry per warm-up shape: what compiled while it ran (Engine.warm_up).
        self.warm_ups: dict[str, list[dict[str, Any]]] = {}
        self._caches: dict[tuple[str, int, int], transformers.Cache] = {}

    def compile_config(self) -> transformers.CompileConfig:
        """Inductor with CUDA graphs on a GPU ("reduce-overhead"); the whole step one graph,
        compiled for each shape as it is (``dynamic=False``: a second batch bucket gets a graph
        of its own, not one with a symbolic batch size, which CUDA graphs would record per size
        anyway and which makes AOTAutograd guard the overlap of the cache's aliased views)."""
        cuda_graphs = self.device.type == "cuda" and self.compile_backend == "inductor"
        config = transformers.CompileConfig(
            fullgraph=True, dynamic=False, backend=self.compile_backend,
            mode="reduce-overhead" if cuda_graphs else None)
        config._compile_all_devices = True  # transformers compiles on CUDA only, unless told
        return config

    def set_batch_buckets(self, buckets: Mapping[str, Sequence[int]]) -> None:
        """Batch buckets per model (a model without any runs each batch size as it comes);
        Dynamo's recompile limit is raised for all their shapes (reserving raises it too)."""
        self.batch_buckets.update({m: sorted({int(b) for b in sizes})
                                   for m, sizes in buckets.items()})
        shapes = sum(len(b) for b in self.batch_buckets.values()) * len(self.prompt_buckets)
        raise_recompile_limit(2 * shapes + 8)

    def shape(self, alias: str, count: int, prompt_len: int, new_tokens: int
              ) -> DecodeShape | None:
        """The shape a batch of ``count`` prompts (the longest ``prompt_len`` tokens) runs at;
        None when its prompts are longer than every bucket (it is decoded eagerly)."""
        prompt_bucket = bucket_for(prompt_len, self.prompt_buckets)
        if prompt_bucket is None:
            return None
        batch = bucket_for(count, self.batch_buckets.get(alias, [])) or count
        return DecodeShape(batch, prompt_bucket, prompt_bucket + new_tokens)

    def warm_shapes(self, alias: str, new_tokens: int) -> list[DecodeShape]:
        """Every shape the model can meet: its batch buckets (or 1) by the prompt buckets."""
        return [DecodeShape(b, p, p + new_tokens)
                for b in self.batch_buckets.get(alias) or [1] for p in self.prompt_buckets]

    def reserve(self, modules: Mapping[str, torch.nn.Module], new_tokens: int) -> int:
        """Size the KV arena once for the largest warm-up shape of ``modules`` and raise
        Dynamo's recompile limit for all their shapes; the arena's bytes."""
        needs = [kv_bytes(module, shape.batch, shape.cache_len, self.dtype)
                 for alias, module in modules.items()
                 for shape in self.warm_shapes(alias, new_tokens)]
        if self.kv_arena.ensure(max(needs, default=0)):
            self._caches.clear()  # cut from the old bytes
        shapes = sum(len(self.warm_shapes(a, new_tokens)) for a in modules)
        raise_recompile_limit(2 * shapes + 8)
        return self.kv_arena.capacity

    def cache(self, alias: str, module: torch.nn.Module, shape: DecodeShape
              ) -> transformers.Cache:
        """The model's persistent cache for ``shape``, reset (built on first use)."""
        key = (alias, shape.batch, shape.cache_len)
        cache = self._caches.get(key)
        if cache is None:
            if self.kv_arena.ensure(kv_bytes(module, shape.batch, shape.cache_len, self.dtype)):
                self._caches.clear()  # a shape no reservation covered: the arena moved
            cache = self._caches[key] = self._build(module, shape)
        cache.reset()
        return cache

    def prepare(self, alias: str, module: torch.nn.Module, options: dict[str, object],
                input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch made ready for ``generate``: padded up to its bucket with copies of its
        first row, and the model's persistent cache for that shape put in ``options``. A batch
        whose prompts are longer than every bucket is left as it is and decoded eagerly
        (counted in ``eager_fallbacks``)."""
        shape = self.shape(alias, input_ids.shape[0], input_ids.shape[1], new_tokens)
        if shape is None:
            self.eager_fallbacks += 1
            log.warning("prompts of %d tokens are longer than every prompt bucket: decoded "
                        "eagerly", input_ids.shape[1])
            return input_ids, attention_mask
        extra = shape.batch - input_ids.shape[0]
        options[cache_argument(module)] = self.cache(alias, module, shape)
        options["compile_config"] = self.compile_config()
        return (torch.cat([input_ids, input_ids[:1].expand(extra, -1)]),
                torch.cat([attention_mask, attention_mask[:1].expand(extra, -1)]))

    def _build(self, module: torch.nn.Module, shape: DecodeShape) -> transformers.Cache:
        config = module.config.get_text_config(decoder=True)
        cache = transformers.StaticCache(config=config, max_cache_len=shape.cache_len)
        _layers, heads, head_dim = _kv_geometry(module)
        dims = (shape.batch, heads, shape.cache_len, head_dim)
        one = kv_bytes(module, shape.batch, shape.cache_len, self.dtype) // (2 * _layers)
        if len(cache.layers) != _layers or any(getattr(layer, "is_sliding", False)
                                                for layer in cache.layers):
            raise ValueError("the static engine takes full-attention decoders only")
        for index, layer in enumerate(cache.layers):
            keys = self.kv_arena.view(2 * index * one, self.dtype, dims)
            values = self.kv_arena.view((2 * index + 1) * one, self.dtype, dims)
            _bind(layer, keys, values)
        return cache

    def counts(self) -> dict[str, int | None]:
        """What run.json and the GPU check report: compiles, CUDA-graph recordings and CUDA
        graphs skipped since the last warm-up, eager fallbacks, KV arena (re)allocations."""
        after = self.watch.since_mark()
        return {"compiles_after_warm_up": after["compiles"],
                "graph_recordings_after_warm_up": after["graph_recordings"],
                "cudagraph_skips_after_warm_up": self.watch.skips_since_mark(),
                "compiles_total": self.watch.compiles if self.watch.available else None,
                "eager_fallbacks": self.eager_fallbacks,
                "kv_arena_allocations": self.kv_arena.allocations}
