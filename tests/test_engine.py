"""The engine on the tiny models: real loads, unloads and batches, left padding, exact token
counts, the host-RAM cache, and out-of-memory splitting (provoked with ``oom_batch_limit``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from sincere.assets.architectures import HUB_IDS
from sincere.assets.model_store import scan_models
from sincere.assets.workloads import synthetic_prompts
from sincere.engine.engine import OOM_ERROR_NAME, Engine, EngineError, set_cpu_threads

ALIASES = list(HUB_IDS)
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """Twelve synthetic prompts, shortest first (a few tens to a few hundred tokens)."""
    return sorted(synthetic_prompts(12, seed=7), key=len)


def test_load_generate_unload_each_model(tiny_models: Path, prompts: list[str]) -> None:
    engine = Engine(tiny_models, host_cache=False)
    sizes_gb = {row["alias"]: row["size_gb"] for row in scan_models(tiny_models)}
    assert engine.available_models() == sorted(ALIASES)
    for alias in ALIASES:
        loaded = engine.load(alias)
        assert (loaded.alias, loaded.path, engine.resident) == (alias, "disk", alias)
        assert loaded.size_gb == pytest.approx(sizes_gb[alias], abs=1e-4)
        with pytest.raises(EngineError, match="unload"):
            engine.load(alias)
        batch = engine.generate(prompts[:3], NEW_TOKENS)
        assert batch.output_tokens == [NEW_TOKENS] * 3
        assert [len(ids) for ids in batch.output_ids] == [NEW_TOKENS] * 3
        assert batch.prompt_tokens == [engine.count_tokens(alias, p) for p in prompts[:3]]
        assert batch.prompt_tokens[0] < batch.prompt_tokens[2]
        assert (batch.failed, batch.retries) == ([], 0)
        assert all(isinstance(text, str) for text in batch.texts)
        assert engine.unload() >= 0.0
        assert engine.resident is None
    with pytest.raises(EngineError, match="load"):
        engine.generate(prompts[:1])
    with pytest.raises(EngineError, match="granite-7b"):  # the message lists what there is
        engine.load("no-such-model")
    assert engine.unload() == 0.0  # nothing resident: nothing to do


@pytest.mark.parametrize("alias", ALIASES)
def test_left_padding_gives_the_same_tokens_alone_and_in_a_batch(
        tiny_models: Path, prompts: list[str], alias: str) -> None:
    engine = Engine(tiny_models)
    engine.load(alias)
    short, middle, long = prompts[0], prompts[5], prompts[-1]
    alone = {p: engine.generate([p], NEW_TOKENS).output_ids[0] for p in (short, middle, long)}
    mixed = engine.generate([long, middle, short], NEW_TOKENS)  # padded to the longest
    assert mixed.output_ids == [alone[long], alone[middle], alone[short]]
    pair = engine.generate([short, long], NEW_TOKENS)
    assert pair.output_ids == [alone[short], alone[long]]
    engine.unload()


def test_outputs_depend_on_the_prompt(tiny_models: Path, prompts: list[str]) -> None:
    # What makes the padding test above meaningful: the same tokens come back only when each row
    # really sees its own prompt (llama's tiny model answers each prompt differently).
    engine = Engine(tiny_models)
    engine.load("llama3-8b")
    batch = engine.generate(prompts[:8], NEW_TOKENS)
    assert len({tuple(ids) for ids in batch.output_ids}) >= 6


def test_exactly_max_new_tokens_even_past_eos(tiny_models: Path, prompts: list[str],
                                              tmp_path: Path) -> None:
    # A copy of granite whose EOS is the very token it generates first for this prompt.
    first = Engine(tiny_models)
    first.load("granite-7b")
    eos = first.generate(prompts[:1], 1).output_ids[0][0]
    models = tmp_path / "models"
    shutil.copytree(tiny_models / "granite-7b", models / "granite-7b")
    config_path = models / "granite-7b" / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = eos
    config_path.write_text(json.dumps(config))

    exact = Engine(models, exact_new_tokens=True)
    exact.load("granite-7b")
    for max_new_tokens in (1, 9):
        assert exact.generate(prompts[:2], max_new_tokens).output_tokens == [max_new_tokens] * 2
    free = Engine(models, exact_new_tokens=False, max_new_tokens=9)
    free.load("granite-7b")
    stopped = free.generate(prompts[:1])
    assert stopped.output_tokens == [1]  # stops at (and counts) its EOS
    assert stopped.output_ids == [[eos]]


@pytest.mark.parametrize("alias", ALIASES)
def test_host_cache_load_gives_the_outputs_of_a_disk_load(
        tiny_models: Path, prompts: list[str], alias: str) -> None:
    disk = Engine(tiny_models, host_cache=False)
    disk.load(alias)
    expected = disk.generate(prompts[:4], NEW_TOKENS).output_ids
    disk.unload()

    cache = Engine(tiny_models, host_cache=True)
    first = cache.load(alias)
    assert first.path == "disk"  # the first load reads the files, and keeps a copy
    cache.unload()
    assert cache.host_cached == [alias]
    second = cache.load(alias)
    assert (second.path, second.size_gb) == ("host_cache", first.size_gb)
    assert cache.generate(prompts[:4], NEW_TOKENS).output_ids == expected
    cache.unload()
    cache.evict(alias)
    assert cache.host_cached == []
    assert cache.load(alias).path == "disk"


def test_prefetch_fills_the_cache_without_loading(tiny_models: Path) -> None:
    engine = Engine(tiny_models, host_cache=True)
    assert engine.prefetch("gemma-7b") > 0.0
    assert engine.prefetch("gemma-7b") == 0.0  # already there
    assert (engine.resident, engine.host_cached) == (None, ["gemma-7b"])
    assert engine.load("gemma-7b").path == "host_cache"
    with pytest.raises(EngineError, match="host_cache"):
        Engine(tiny_models, host_cache=False).prefetch("gemma-7b")


def test_out_of_memory_splits_the_batch_and_answers_every_prompt(
        tiny_models: Path, prompts: list[str], caplog: pytest.LogCaptureFixture) -> None:
    whole = Engine(tiny_models)
    whole.load("llama3-8b")
    expected = whole.generate(prompts[:8], NEW_TOKENS)

    limited = Engine(tiny_models, oom_batch_limit=3)
    limited.load("llama3-8b")
    with caplog.at_level(logging.DEBUG):
        split = limited.generate(prompts[:8], NEW_TOKENS)
    # 8 -> 4 + 4 -> (2 + 2) + (2 + 2): three splits, then every half fits.
    assert split.retries == 3
    assert (split.failed, split.errors) == ([], [])
    assert split.out_of_memory
    assert split.output_ids == expected.output_ids
    assert split.output_tokens == [NEW_TOKENS] * 8
    assert split.prompt_tokens == expected.prompt_tokens
    assert f"{OOM_ERROR_NAME} at batch 8" in caplog.text
    assert not [p for p in prompts if p.splitlines()[0] in caplog.text]


def test_a_single_prompt_that_still_runs_out_is_failed_not_lost(
        tiny_models: Path, prompts: list[str]) -> None:
    engine = Engine(tiny_models, oom_batch_limit=0)  # even one prompt is too many
    engine.load("granite-7b")
    result = engine.generate(prompts[:3], NEW_TOKENS)
    # 3 -> 1 + 2 -> 1 + 1: two splits; then each single prompt fails on its own.
    assert result.retries == 2
    assert result.failed == [0, 1, 2]
    assert result.errors == [OOM_ERROR_NAME] * 3
    assert result.other_errors == []
    assert result.texts == [""] * 3 and result.output_tokens == [0] * 3
    assert result.prompt_tokens == [engine.count_tokens("granite-7b", p) for p in prompts[:3]]


def test_an_error_other_than_out_of_memory_fails_the_batch_at_once(
        tiny_models: Path, prompts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A deterministic failure (here injected at the model call) would fail again however the
    batch were cut: every prompt of the batch fails at once with the error's class name, no
    split is tried, and the engine serves the next batch."""
    engine = Engine(tiny_models)
    engine.load("llama3-8b")
    expected = engine.generate(prompts[:6], NEW_TOKENS)
    real_generate_batch = engine._generate_batch
    calls: list[int] = []

    def failing(batch_prompts: list[str], max_new_tokens: int):
        calls.append(len(batch_prompts))
        if prompts[4] in batch_prompts:  # a fault injected at the model call
            raise ValueError("the model cannot take this input")
        return real_generate_batch(batch_prompts, max_new_tokens)

    monkeypatch.setattr(engine, "_generate_batch", failing)
    result = engine.generate(prompts[:6], NEW_TOKENS)
    assert calls == [6]  # tried once, never split
    assert (result.failed, result.errors, result.retries) == (
        [0, 1, 2, 3, 4, 5], ["ValueError"] * 6, 0)
    assert not result.out_of_memory and result.other_errors == ["ValueError"]
    assert result.texts == [""] * 6 and result.output_tokens == [0] * 6
    assert result.prompt_tokens == expected.prompt_tokens  # lengths still reported
    after = engine.generate(prompts[:3], NEW_TOKENS)  # the engine is still usable
    assert (after.failed, after.output_ids) == ([], expected.output_ids[:3])


def test_out_of_memory_then_another_error_fails_only_that_half(
        tiny_models: Path, prompts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """After an out-of-memory split, an error of another kind fails the half it hit; the other
    half is served."""
    engine = Engine(tiny_models, oom_batch_limit=2)
    engine.load("granite-7b")
    real_generate_batch = engine._generate_batch

    def failing(batch_prompts: list[str], max_new_tokens: int):
        if prompts[0] in batch_prompts and len(batch_prompts) <= 2:
            raise RuntimeError("injected fault")
        return real_generate_batch(batch_prompts, max_new_tokens)

    monkeypatch.setattr(engine, "_generate_batch", failing)
    result = engine.generate(prompts[:4], NEW_TOKENS)
    # 4 -> 2 + 2 (out of memory); the first half fails with RuntimeError, the second is served.
    assert (result.retries, result.failed, result.errors) == (1, [0, 1], ["RuntimeError"] * 2)
    assert result.output_tokens == [0, 0, NEW_TOKENS, NEW_TOKENS]


def test_cpu_threads_leave_a_core_to_the_server() -> None:
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(3) == torch.get_num_threads() == 3
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        assert set_cpu_threads(0) == torch.get_num_threads() == max(1, cores - 1)
    finally:
        torch.set_num_threads(before)
