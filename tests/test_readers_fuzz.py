"""Fuzzing the file readers: whatever a trace or profile file holds, the reader returns sound
data or raises its one documented error naming the file, never anything else."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.profiles.profile_set import ProfileError, load_profiles
from sincere.schemas import BATCH_PROFILE_COLUMNS, LOADING_PROFILE_COLUMNS
from sincere.traffic.traces import read_trace

FUZZ = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module", autouse=True)
def temporary_folders_removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every example writes its files in a temporary folder of its own; the module's examples
    make them in a folder of the module's, which must be empty again at the end."""
    folder = tmp_path_factory.mktemp("fuzz_temp")
    before, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before
    assert list(folder.iterdir()) == []

cells = st.one_of(st.sampled_from(["", "0", "1", "-1", "2.5", "1e9", "nan", "inf", "x",
                                   "True", "false", "a", "b", " 3 "]),
                  st.text(alphabet="0123456789.-e,\"\n ", max_size=6))


def _check_trace(text: str, suffix: str) -> None:
    """Write ``text`` as a trace file in a folder of its own (removed afterwards: a run makes
    hundreds of examples) and check what the reader makes of it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"trace{suffix}"
        path.write_text(text, encoding="utf-8")
        _check_trace_file(path)


def _check_trace_file(path: Path) -> None:
    try:
        times_s, tokens = read_trace(path)
    except ValueError as error:
        assert str(path) in str(error)
        return
    assert len(times_s) == len(tokens) > 0
    assert times_s[0] == 0.0 and np.all(np.diff(times_s) >= 0) and np.all(np.isfinite(times_s))
    assert all(t is None or isinstance(t, int) for t in tokens)


timestamps = st.one_of(
    st.builds(lambda h, m, s, f: f"2023-11-16 {h:02d}:{m:02d}:{s:02d}.{f}",
              st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
              st.text(alphabet="0123456789", min_size=1, max_size=9)),
    st.text(max_size=12))


@FUZZ
@given(st.lists(st.tuples(timestamps, cells, cells), max_size=8), st.booleans())
def test_azure_csv_reader(rows: list[tuple[str, str, str]], trailing_newline: bool) -> None:
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens", *(",".join(r) for r in rows)]
    _check_trace("\n".join(lines) + ("\n" if trailing_newline else ""), ".csv")


json_values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))


@FUZZ
@given(st.lists(st.one_of(
    st.fixed_dictionaries({"timestamp": json_values},
                          optional={"input_length": json_values, "output_length": json_values}),
    st.text(max_size=20)), min_size=1, max_size=8))
def test_mooncake_jsonl_reader(records: list) -> None:
    import json

    lines = [json.dumps(r) if isinstance(r, dict) else r for r in records]
    if not lines[0].lstrip().startswith("{"):
        lines.insert(0, json.dumps({"timestamp": 0}))
    _check_trace("\n".join(lines), ".jsonl")


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "b", ""]), cells, cells, cells, cells),
                max_size=5),
       st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), cells, cells, cells,
                          st.sampled_from(["True", "False", "", "x"])), max_size=8))
def test_profile_readers(loading_rows, batch_rows) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _check_profiles(Path(folder), loading_rows, batch_rows)


def _check_profiles(folder: Path, loading_rows, batch_rows) -> None:
    loading = [",".join(LOADING_PROFILE_COLUMNS)]
    for model, size, load, std, unload in loading_rows:
        loading.append(f"{model},{size},float32,{load},{std},{unload},0.1,3,cpu,off")
    batch = [",".join(BATCH_PROFILE_COLUMNS)]
    for model, size, tokens, seconds, oom in batch_rows:
        batch.append(f"{model},{size},1,{tokens},20,{seconds},1,1,,{oom}")
    (folder / "model_loading_times_cpu_noncc_20260101-000000.csv").write_text("\n".join(loading))
    (folder / "batch_profiling_cpu_noncc_20260101-000000.csv").write_text("\n".join(batch))
    try:
        profiles = load_profiles("cpu_noncc", folder)
    except ProfileError as error:
        assert str(folder) in str(error) or "profiling" in str(error)
        return
    for name, profile in profiles.models.items():
        for tokens, curve in profile.curves.items():
            assert list(curve.sizes) == sorted(curve.sizes) and curve.sizes[0] >= 1
            for size in (1, curve.sizes[-1], curve.sizes[-1] * 2):
                assert math.isfinite(profile.processing_s(size, tokens))
            assert profile.best_batch(tokens) in curve.sizes
        assert profiles.load_s(name) >= 0 and profiles.swap_s(None, name) >= 0
