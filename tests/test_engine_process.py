"""The engine in a process of its own (sincere.engine.process): the same answers as in-process,
errors carried back with their class, live attributes readable while a call runs, a dead child
reported, and the cores split and given back."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sincere.engine.engine import Engine, EngineError
from sincere.engine.process import EngineProcess, EngineProcessError
from sincere.host.processes import split_cores
from tests.conftest import SERVER_TEST_NEW_TOKENS

MODEL = "llama3-8b"


@pytest.fixture(scope="module")
def prompts(server_workloads: Path) -> list[str]:
    from sincere.assets.workloads import read_workloads

    return list(read_workloads(server_workloads).values())[:4]


@pytest.fixture(scope="module")
def remote(tiny_models: Path):
    engine = EngineProcess(dict(models_dir=tiny_models, host_cache=True,
                                max_new_tokens=SERVER_TEST_NEW_TOKENS), cpu_threads=1)
    yield engine
    engine.close()


def test_answers_as_the_engine_in_this_process(remote: EngineProcess, tiny_models: Path,
                                               prompts: list[str]) -> None:
    local = Engine(tiny_models, host_cache=True, max_new_tokens=SERVER_TEST_NEW_TOKENS)
    assert remote.available_models() == local.available_models()
    assert remote.device == local.device and remote.decode == local.decode
    assert remote.resident is None
    remote.load(MODEL)
    local.load(MODEL)
    try:
        assert remote.resident == MODEL
        ours, theirs = remote.generate(prompts[:4]), local.generate(prompts[:4])
        assert ours.output_tokens == theirs.output_tokens == [SERVER_TEST_NEW_TOKENS] * 4
        assert ours.output_ids == theirs.output_ids  # greedy decoding of the same weights
        assert ours.failed == []
    finally:
        remote.unload()
        local.unload()
    assert remote.resident is None
    assert MODEL in remote.host_cached


def test_a_swap_is_one_call_that_unloads_and_loads(remote: EngineProcess,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    forward = EngineProcess._call

    def counted(self: EngineProcess, name: str, args: tuple, kwargs: dict) -> object:
        calls.append(name)
        return forward(self, name, args, kwargs)

    monkeypatch.setattr(EngineProcess, "_call", counted)
    try:
        first = remote.swap(MODEL)  # nothing resident: a load
        assert (remote.resident, first.alias) == (MODEL, MODEL)
        second = remote.swap("gemma-7b")
        assert (remote.resident, second.alias) == ("gemma-7b", "gemma-7b")
        assert {MODEL, "gemma-7b"} <= set(remote.host_cached)  # MODEL's copy kept
        assert calls == ["swap", "swap"]  # the caller waits for one answer per swap
    finally:
        remote.unload()


def test_an_engine_error_comes_back_with_its_class(remote: EngineProcess) -> None:
    remote.load(MODEL)
    try:
        with pytest.raises(EngineError, match="resident"):
            remote.load("gemma-7b")
        assert remote.resident == MODEL  # the engine is still usable
    finally:
        remote.unload()
    with pytest.raises(AttributeError):
        remote.no_such_method  # noqa: B018 - the attribute access is the test


def test_live_attributes_are_read_without_waiting_for_a_call(remote: EngineProcess) -> None:
    # A /health during a batch must not wait for the batch: while a call holds the engine
    # (here, the lock held by hand), resident still answers, with the last value it had.
    remote.load(MODEL)
    try:
        with remote._lock:
            seen: list[str | None] = []
            reader = threading.Thread(target=lambda: seen.append(remote.resident))
            reader.start()
            reader.join(30)
            assert seen == [MODEL]
    finally:
        remote.unload()


def test_a_dead_engine_process_is_reported(tiny_models: Path) -> None:
    engine = EngineProcess(dict(models_dir=tiny_models), cpu_threads=1)
    engine._process.kill()
    engine._process.wait()
    with pytest.raises(EngineProcessError, match="died"):
        engine.load(MODEL)
    engine.close()


def test_an_engine_that_cannot_start_raises_its_error(tmp_path: Path) -> None:
    with pytest.raises(Exception) as caught:
        EngineProcess(dict(models_dir=tmp_path, decode="no-such-decode"))
    assert "no-such-decode" in str(caught.value)


@pytest.mark.parametrize("cores, expected", [
    ([0, 1], ({0}, {1})),
    ([0, 1, 2, 3], ({0, 1}, {2, 3})),
    ([4, 5, 6], ({4}, {5, 6})),
    ([3], None),
])
def test_split_cores_gives_the_server_the_first_half(cores, expected) -> None:
    assert split_cores(cores) == expected


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
def test_pinning_splits_the_cores_until_close(tiny_models: Path) -> None:
    before = os.sched_getaffinity(0)
    server_side, engine_side = split_cores(before)
    engine = EngineProcess(dict(models_dir=tiny_models), pin=True)
    try:
        assert os.sched_getaffinity(0) == server_side
        assert os.sched_getaffinity(engine.pid) == engine_side
        assert engine.cores == {"server": sorted(server_side), "engine": sorted(engine_side)}
    finally:
        engine.close()
    assert os.sched_getaffinity(0) == before
