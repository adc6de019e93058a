"""The fast swap path (flat host buffers, the module kept across swaps) and the static-cache
compiled decoding: right on the CPU, and compiled once per model whatever the swaps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sincere.engine.engine import Engine
from sincere.engine.weights import _module_tensors
from tests.server_support import MODELS, one_cpu_thread

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def prompts(server_workloads: Path) -> list[str]:
    from sincere.assets.workloads import read_workloads

    return list(read_workloads(server_workloads).values())[:6]


def _inside(tensor: torch.Tensor, buffer: torch.Tensor) -> bool:
    start = buffer.data_ptr()
    end = start + buffer.numel() * buffer.element_size()
    return start <= tensor.data_ptr() and tensor.data_ptr() + tensor.nbytes <= end


def test_a_swap_is_one_flat_copy_and_the_module_is_kept(tiny_models: Path,
                                                       prompts: list[str]) -> None:
    one_cpu_thread()
    engine = Engine(tiny_models, host_cache=True)
    engine.prefetch("gemma-7b")
    entry = engine.host.entries["gemma-7b"]
    module, weights = entry.module, entry.weights
    host = weights.host[torch.float32]
    tensors = _module_tensors(module)
    assert all(_inside(t, host) for t in tensors)  # packed, nothing memory-mapped left

    assert engine.load("gemma-7b").path == "host_cache"
    assert engine._model is module  # not rebuilt
    device = weights.device[torch.float32]
    assert device.data_ptr() != host.data_ptr()
    assert all(_inside(t, device) for t in tensors)  # every tensor in the one device copy
    # gemma ties its head to its embeddings: still one tensor.
    assert module.lm_head.weight.data_ptr() == module.model.embed_tokens.weight.data_ptr()
    first = engine.generate(prompts, NEW_TOKENS)

    engine.unload()
    assert not weights.on_device and all(_inside(t, host) for t in tensors)
    engine.load("gemma-7b")
    assert engine.generate(prompts, NEW_TOKENS).output_ids == first.output_ids

    disk = Engine(tiny_models, host_cache=False)
    disk.load("gemma-7b")
    assert disk.generate(prompts, NEW_TOKENS).output_ids == first.output_ids


def test_every_swap_of_a_model_lands_on_the_same_addresses_of_one_arena(
        tiny_models: Path, prompts: list[str]) -> None:
    """The weights arena is sized once for the largest model; a swap copies into it and
    allocates nothing, so each model's tensors have the same addresses at every swap (what
    keeps CUDA graphs recorded for it valid)."""
    one_cpu_thread()
    engine = Engine(tiny_models, host_cache=True, copy_mode="chunked", copy_threads=3,
                    copy_chunk_mb=1)
    aliases = ["granite-7b", "gemma-7b", "llama3-8b"]
    for alias in aliases:
        engine.prefetch(alias)
    largest = max(engine.host.entries[a].weights.arena_offsets()[1] for a in aliases)
    assert engine.reserve() == engine.host.arena.capacity >= largest
    arena_address = engine.host.arena.address
    addresses: dict[str, list[list[int]]] = {a: [] for a in aliases}
    tokens: dict[str, list[list[list[int]]]] = {a: [] for a in aliases}
    for _ in range(2):
        for alias in aliases:
            engine.load(alias)
            addresses[alias].append([t.data_ptr() for t in _module_tensors(engine._model)])
            tokens[alias].append(engine.generate(prompts[:2], 4).output_ids)
            engine.unload()
    assert (engine.host.arena.allocations, engine.host.arena.address) == (1, arena_address)
    for alias in aliases:
        first, second = addresses[alias]
        assert first == second and min(first) >= arena_address
        assert tokens[alias][0] == tokens[alias][1]  # chunked copies from 3 threads are exact
    assert addresses["granite-7b"][0] != addresses["gemma-7b"][0]


@pytest.fixture(scope="module")
def static_engine(tiny_models: Path) -> Engine:
    """A static engine on the three tiny models, warmed up as the server warms it: batch
    buckets 2 and 8 (every batch of the server tests' strategies fits one), prompt buckets 24
    and 96 tokens. Compiled with the 'aot_eager' backend (Dynamo, AOTAutograd and
    functionalisation of the KV views mutated in place, no C++ build); a GPU compiles with
    inductor and CUDA graphs (benchmarks/gpu_check.py), inductor on a CPU is tried below."""
    one_cpu_thread()
    engine = Engine(tiny_models, decode="static", compile_backend="aot_eager",
                    max_new_tokens=NEW_TOKENS, prompt_buckets=(24, 96))
    for alias in MODELS:
        engine.prefetch(alias)
    engine.set_batch_buckets(dict.fromkeys(MODELS, [2, 8]))
    engine.reserve()
    for alias in MODELS:
        engine.load(alias)
        engine.warm_up()
        engine.unload()
    return engine


def test_static_decoding_compiles_in_warm_up_only_whatever_the_swaps_and_prompts(
        static_engine: Engine, tiny_models: Path, prompts: list[str]) -> None:
    """Three models swapped in turn, batches of 1 to 8 prompts of 3 to 70 tokens: the tokens of
    plain eager decoding, and no compile after warm-up (the warm-up's own were counted)."""
    one_cpu_thread()
    plain = Engine(tiny_models, host_cache=False)
    assert static_engine.compile_counts()["compiles_total"] > 0
    # 3 models x 2 batch buckets x 2 prompt buckets: room for twice that (8 by default).
    assert torch._dynamo.config.recompile_limit >= 2 * 12 + 8
    for round_number, size in enumerate([1, 3, 8, 2, 5, 7]):
        for alias in MODELS:
            batch = [" ".join(p.split()[:2 + 9 * ((i + round_number) % 5)])
                     for i, p in enumerate(prompts[:size])]
            static_engine.load(alias)
            result = static_engine.generate(batch, NEW_TOKENS)
            static_engine.unload()
            plain.load(alias)
            expected = plain.generate(batch, NEW_TOKENS)
            plain.unload()
            assert result.output_ids == expected.output_ids, (alias, size)
            assert result.prompt_tokens == expected.prompt_tokens
    counts = static_engine.compile_counts()
    assert (counts["compiles_after_warm_up"], counts["graph_recordings_after_warm_up"]) == (0, 0)
    assert counts["eager_fallbacks"] == 0
    assert (counts["kv_arena_allocations"], counts["weights_arena_allocations"]) == (1, 1)
    static_engine.load("gemma-7b")
    assert not static_engine.generate(prompts[:9], NEW_TOKENS).failed  # 9: above every bucket
    static_engine.generate([" ".join(["word"] * 150)], NEW_TOKENS)  # above every prompt bucket
    static_engine.unload()
    assert static_engine.compile_counts()["eager_fallbacks"] == 1


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with, or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - any failure to find one means: no inductor on this CPU
        return None


# Shapes of their own: Dynamo reuses a graph compiled for another engine's module of the same
# architecture and shape (the static_engine fixture's), and this test counts compiles.
@pytest.mark.parametrize(("backend", "batch_buckets", "prompt_buckets"), [
    ("aot_eager", [3, 5], (40, 80)),
    # Inductor's C++ build takes ~40 s a graph on two busy cores: one shape.
    pytest.param("inductor", [4], (96,), marks=pytest.mark.skipif(
        _cpp_compiler() is None, reason="inductor needs a C++ compiler on a CPU")),
])
def test_the_static_engine_compiles_through_the_backend_asked_and_decodes_as_eager(
        backend: str, batch_buckets: list[int], prompt_buckets: tuple[int, ...],
        tiny_models: Path, prompts: list[str]) -> None:
    """The compile stack below Dynamo on the CPU: AOTAutograd's functionalisation of the KV
    views cut from one arena and mutated in place, under inference_mode, with dynamic=False
    (one graph per shape), and for inductor its generated kernels. Each warm-up shape compiles
    once, through that backend; afterwards batches of every size compile nothing and give the
    plain engine's tokens, and teacher-forced agreement is complete with finite logits."""
    from benchmarks.comparisons import agreement_runs

    one_cpu_thread()
    alias = "llama3-8b"
    engine = Engine(tiny_models, decode="static", compile_backend=backend,
                    max_new_tokens=NEW_TOKENS, prompt_buckets=prompt_buckets)
    engine.prefetch(alias)
    engine.set_batch_buckets({alias: batch_buckets})
    engine.reserve()
    engine.load(alias)
    engine.warm_up()
    shapes = engine.static.warm_ups[alias]
    assert len(shapes) == len(batch_buckets) * len(prompt_buckets)
    assert [(s["compiles"], s["backend"], s["failed_prompts"]) for s in shapes] == [
        (1, backend, 0)] * len(shapes)
    plain = Engine(tiny_models, host_cache=False)
    plain.load(alias)
    for size in (1, 3, 4, 2):
        batch = [" ".join(p.split()[:3 + 7 * i]) for i, p in enumerate(prompts[:size])]
        assert engine.generate(batch, NEW_TOKENS).output_ids == plain.generate(
            batch, NEW_TOKENS).output_ids, size
    agreement = agreement_runs(engine, prompts[:batch_buckets[-1]])
    assert (agreement["fraction"], agreement["non_finite_logits"]) == (1.0, 0)
    counts = engine.compile_counts()
    assert (counts["compiles_after_warm_up"], counts["eager_fallbacks"]) == (0, 0)


def test_a_nan_in_a_buffer_agrees_with_itself_but_the_logits_say_so(
        static_engine: Engine, prompts: list[str]) -> None:
    """The failure the old check could not see: a NaN rotary frequency makes eager and static
    decoding produce the same (meaningless) tokens; the finiteness of the logits fails. The
    next load copies the host cache's good buffer back."""
    from benchmarks.comparisons import agreement_runs

    one_cpu_thread()
    static_engine.load("llama3-8b")
    try:
        static_engine._model.model.rotary_emb.inv_freq[0] = float("nan")
        broken = agreement_runs(static_engine, prompts[:2])
    finally:
        static_engine.unload()
    assert broken["fraction"] == 1.0 and broken["non_finite_logits"] > 0
    static_engine.load("llama3-8b")
    try:
        assert agreement_runs(static_engine, prompts[:2])["non_finite_logits"] == 0
    finally:
        static_engine.unload()


def test_the_compile_watch_counts_what_compiles_after_its_mark() -> None:
    from sincere.engine.static_decode import CompileWatch

    watch = CompileWatch()
    assert watch.available  # this torch has the compile callbacks the watch relies on
    watch.mark()
    double = torch.compile(lambda x: x * 2 + 1, backend="eager")
    double(torch.ones(3))
    double(torch.ones(3))  # the same shape: no new compile
    assert watch.since_mark() == {"compiles": 1, "graph_recordings": 0}
    watch.mark()
    assert watch.since_mark() == {"compiles": 0, "graph_recordings": 0}


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_the_compile_tally_tells_which_backend_compiled(backend: str) -> None:
    """Dynamo alone, or AOTAutograd below it: told apart by torch's own counters."""
    from sincere.engine.static_decode import CompileWatch

    watch = CompileWatch()
    before = watch.tally()
    triple = torch.compile(lambda x: x * 3 - 1, backend=backend)
    triple(torch.ones(4))
    triple(torch.ones(4))
    spent = watch.tally() - before
    assert (spent.compiles, spent.aot_compiles, spent.inductor_compiles) == (
        1, 1 if backend == "aot_eager" else 0, 0)
    assert spent.backend() == backend and spent.cudagraph_skips == 0
    assert (watch.tally() - watch.tally()).backend() == "none"


def test_unknown_decode_mode_is_refused(tiny_models: Path) -> None:
    with pytest.raises(ValueError, match="decode must be one of eager, static"):
        Engine(tiny_models, decode="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_chunked_copy_from_threads_on_streams_is_exact() -> None:
    from sincere.engine.weights import _copy

    source = torch.randn(10_000_003)
    target = torch.empty_like(source, device="cuda")
    _copy(target, source, "chunked", threads=4, chunk_bytes=1 << 20)
    assert torch.equal(target.cpu(), source)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_memory_is_pinned_at_its_exact_size() -> None:
    from sincere.engine.weights import pack, pin, unpin

    module = torch.nn.Linear(1000, 3001)  # 12 MB of float32: not a power of two
    weights = pack(module)
    report = pin(weights)
    assert report.how == "registered" and report.nbytes == report.reserved_bytes
    assert report.nbytes == weights.nbytes and weights.host[torch.float32].is_pinned()
    unpin(weights)
    assert not weights.host[torch.float32].is_pinned()


def test_the_server_runs_on_the_static_engine_and_records_no_compile(
        static_engine: Engine, tiny_profile, server_workloads: Path, tmp_path: Path) -> None:
    from tests.server_support import run_in_process, schedule_for

    one_cpu_thread()
    schedule = schedule_for(server_workloads, mean_rps=6.0, duration_s=3.0, seed=21)
    static_engine.static.watch.mark()  # compiles are counted process-wide: from here on
    out = run_in_process(static_engine, tiny_profile, server_workloads, tmp_path / "run",
                         "BestBatch+Timer", schedule, sla_s=8.0, max_new_tokens=NEW_TOKENS)
    assert (out.requests["status"] == "ok").all() and len(out.requests) == len(schedule)
    assert (out.requests["output_tokens"] == NEW_TOKENS).all()
    counts = out.run["compile_counts"]
    assert (counts["compiles_after_warm_up"], counts["graph_recordings_after_warm_up"]) == (0, 0)
