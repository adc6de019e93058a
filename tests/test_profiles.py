"""Profile readers and what the scheduler derives from them (SPEC section 3)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from sincere.assets.architectures import FULL_SIZE
from sincere.profiles.profile_set import (
    DEFAULT_PROFILES_DIR,
    ProfileError,
    find_profile_files,
    load_profiles,
)
from sincere.schemas import BATCH_PROFILE_COLUMNS, LOADING_PROFILE_COLUMNS
from tools import make_example_profiles

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
SHIPPED = sorted(DEFAULT_PROFILES_DIR.glob("*_example*.csv"))

LOADING = ",".join(LOADING_PROFILE_COLUMNS) + "\n" + "\n".join([
    "a,1.0,float32,10.0,2.0,1.0,0.5,5,cpu,off",
    "b,2.0,float32,20.0,0.0,3.0,0.0,5,cpu,off",
]) + "\n"

# a: 50 tokens at sizes 1, 4, 8 (two runs at 4: 2.5 and 3.5 s), OOM at 16; 100 tokens at 1 only.
BATCH = ",".join(BATCH_PROFILE_COLUMNS) + "\n" + "\n".join([
    "a,1,1,50,20,2.0,0.5,25,1.0,False",
    "a,4,1,50,20,2.5,1.6,80,1.0,False",
    "a,4,2,50,20,3.5,1.1,57,1.0,False",
    "a,8,1,50,20,8.0,1.0,50,1.0,False",
    "a,16,1,50,20,,,,,True",
    "a,1,1,100,20,5.0,0.2,20,1.0,False",
    "b,1,1,50,20,4.0,0.25,12,1.0,False",
]) + "\n"


@pytest.fixture()
def profile_dir(tmp_path: Path) -> Path:
    (tmp_path / "model_loading_times_cpu_noncc_20260101-000000.csv").write_text(LOADING)
    (tmp_path / "batch_profiling_cpu_noncc_20260101-000000.csv").write_text(BATCH)
    return tmp_path


def test_derived_quantities(profile_dir: Path) -> None:
    profiles = load_profiles("cpu_noncc", profile_dir, std_factor=1.0)
    a = profiles["a"]
    # P(b): runs averaged (4 -> 3.0 s), linear between sizes, flat below the smallest.
    assert a.processing_s(4, 50) == pytest.approx(3.0)
    assert a.processing_s(6, 50) == pytest.approx(5.5)
    assert a.processing_s(2, 50) == pytest.approx(2 + 1 / 3)
    assert a.processing_std_s(4, 50) == pytest.approx(0.7071, abs=1e-4)
    # Beyond the largest size: the last segment's slope.
    assert a.processing_s(10, 50) == pytest.approx(8.0 + 2 * 1.25)
    # The OOM row bounds the batch; best = highest throughput (4 / 3.0 s).
    assert a.largest_batch(50) == 8
    assert a.best_batch(50) == 4
    # 100 tokens profiled at size 1 only; 60 tokens is scaled from the nearest profiled count.
    assert a.processing_s(1, 100) == pytest.approx(5.0)
    assert a.processing_s(1, 60) == pytest.approx(2.0 * 60 / 50)
    # L = mean + k std; swap(c -> m) = U_c + L_m, zero for the resident model.
    assert profiles.load_s("a") == pytest.approx(12.0)
    assert profiles.swap_s(None, "a") == pytest.approx(12.0)
    assert profiles.swap_s("a", "a") == 0.0
    assert profiles.swap_s("a", "b") == pytest.approx(1.5 + 20.0)
    assert load_profiles("cpu_noncc", profile_dir, std_factor=0.0).load_s("a") == 10.0
    assert profiles.cc_mode == "off"


def test_newest_profile_wins(profile_dir: Path) -> None:
    (profile_dir / "model_loading_times_cpu_noncc_20270101-000000.csv").write_text(LOADING)
    (profile_dir / "batch_profiling_cpu_noncc_20270101-000000.csv").write_text(BATCH)
    loading, batch = find_profile_files("cpu_noncc", profile_dir)
    assert "2027" in loading.name and "2027" in batch.name


def test_a_measured_profile_wins_over_the_shipped_example(profile_dir: Path) -> None:
    # "example-..." sorts after "2026..." as text; the measured one must still be chosen.
    (profile_dir / "model_loading_times_cpu_noncc_example-20301231.csv").write_text(LOADING)
    (profile_dir / "batch_profiling_cpu_noncc_example-20301231.csv").write_text(BATCH)
    (profile_dir / "model_loading_times_cpu_noncc_20260101-000000.csv").write_text(LOADING)
    (profile_dir / "batch_profiling_cpu_noncc_20260101-000000.csv").write_text(BATCH)
    loading, batch = find_profile_files("cpu_noncc", profile_dir)
    assert loading.name.endswith("_20260101-000000.csv")
    assert batch.name.endswith("_20260101-000000.csv")


@pytest.mark.parametrize(("loading", "batch", "message"), [
    (LOADING.replace("10.0,2.0", "ten,2.0"), BATCH, "load_mean_s' is not a number"),
    (LOADING.replace("load_mean_s", "load_s"), BATCH, "missing columns load_mean_s"),
    (LOADING, BATCH.replace("b,1,1,50,20,4.0", "c,1,1,50,20,4.0"), "no batch rows for model 'b'"),
    (LOADING, BATCH.replace("a,1,1,50,20,2.0", "a,1,1,50,20,-2.0"), "must be positive"),
    (LOADING.split("\n")[0] + "\n", BATCH, "no rows"),
    (LOADING.replace("10.0,2.0", "10.0"), BATCH, "line 2: 9 fields where the header has 10"),
    (LOADING, BATCH.replace("a,1,1,50,20,2.0", "a,1,1,50,20,2.0,7,7,7,7,7"),
     "fields where the header has"),
])
def test_malformed_profiles_name_the_problem(tmp_path: Path, loading: str, batch: str,
                                             message: str) -> None:
    (tmp_path / "model_loading_times_x_noncc_1.csv").write_text(loading)
    (tmp_path / "batch_profiling_x_noncc_1.csv").write_text(batch)
    with pytest.raises(ProfileError, match=message):
        load_profiles("x_noncc", tmp_path)


def test_unknown_profile_set_lists_what_is_there(profile_dir: Path) -> None:
    with pytest.raises(ProfileError, match="model_loading_times_cpu_noncc_20260101"):
        load_profiles("h200_cc", profile_dir)
    with pytest.raises(ProfileError, match="no profile for model 'zz'"):
        load_profiles("cpu_noncc", profile_dir)["zz"]


def test_shipped_example_profiles() -> None:
    """The shipped sets read cleanly and keep the original study's published best batches."""
    original = load_profiles("h100-orig_noncc")
    assert {m: original[m].best_batch(50) for m in original.models} == {
        "granite-7b": 48, "gemma-7b": 64, "llama3-8b": 64}
    assert original["llama3-8b"].processing_s(128, 50) == pytest.approx(14.5)
    cc = load_profiles("h100-orig_cc")
    assert cc.cc_mode == "on" and original.cc_mode == "off"
    assert cc["gemma-7b"].load_mean_s == pytest.approx(12.08)
    measured = load_profiles("h100_noncc")
    assert measured["llama3-8b"].processing_s(64, 128) == pytest.approx(11.2, abs=0.1)
    assert measured.dtype == "bfloat16"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_example_row_names_its_source(path: Path) -> None:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    assert all(row["source"].startswith(("measured", "derived", "original study"))
               for row in rows), path.name


def test_fast_engine_profiles() -> None:
    """h100-fast_noncc: Llama's compiled static-cache times as measured, granite and gemma
    derived from them, swaps from pinned memory as in h100_noncc."""
    fast = load_profiles("h100-fast_noncc")
    assert (fast.dtype, fast.cc_mode) == ("bfloat16", "off")
    llama = fast["llama3-8b"]
    measured = {1: 1.144, 64: 2.315, 256: 5.731}  # shared/reference, the compiled calls
    assert {b: llama.processing_s(b, 128) for b in measured} == pytest.approx(measured)
    # At 50 new tokens the reader scales the 128-token times in proportion.
    assert llama.processing_s(256, 50) == pytest.approx(5.731 * 50 / 128)
    # Derived: Llama's time x the bytes a decode step reads, theirs over Llama's (the shipped
    # times are rounded to the millisecond).
    for model in ("granite-7b", "gemma-7b"):
        for size, seconds in measured.items():
            expected = seconds * decode_step_gb(model, size) / decode_step_gb("llama3-8b", size)
            assert fast[model].processing_s(size, 128) == pytest.approx(expected, abs=6e-4)
    # Granite and gemma keep 4x and 3.5x Llama's KV cache a token: the weight ratio at batch 1
    # (0.85, 1.07) grows to about 1.9 at 256.
    assert fast["granite-7b"].processing_s(256, 128) / 5.731 == pytest.approx(1.94, abs=0.01)
    assert fast["gemma-7b"].processing_s(256, 128) / 5.731 == pytest.approx(1.91, abs=0.01)
    assert {m: fast[m].best_batch(50) for m in fast.models} == dict.fromkeys(FULL_SIZE, 256)
    assert {m: fast[m].largest_batch(50) for m in fast.models} == dict.fromkeys(FULL_SIZE, 256)
    # Loads: Llama's measured 0.32 s from pinned memory, the others by weight bytes.
    llama_gb = FULL_SIZE["llama3-8b"].size_gb(2)
    for model, arch in FULL_SIZE.items():
        assert fast.load_s(model) == pytest.approx(0.32 * arch.size_gb(2) / llama_gb, abs=1e-3)
        assert fast.unload_s(model) == pytest.approx(0.28)
    assert fast.load_s("llama3-8b") == load_profiles("h100_noncc").load_s("llama3-8b") == 0.32
    sources = {m: {row["source"].split(":")[0] for row in rows}
               for m, rows in _rows_by_model("batch_profiling_h100-fast_noncc_example").items()}
    assert sources == {"llama3-8b": {"measured"}, "granite-7b": {"derived"},
                       "gemma-7b": {"derived"}}


# The published shapes (the models' config.json and model cards): weights, layers, kv heads and
# head size; bf16 is 2 bytes. Written here, not taken from sincere/assets, so that the derived
# rows are checked against a second source.
PUBLISHED = {"llama3-8b": (8_030_261_248, 32, 8, 128),
             "granite-7b": (6_738_481_152, 32, 32, 128),
             "gemma-7b": (8_537_680_896, 28, 16, 256)}


def decode_step_gb(model: str, batch_size: int) -> float:
    """GB one decode step reads with a static KV cache of 128 prompt + 128 new positions: the
    weights, and K and V of every layer, kv head and position of each request."""
    params, layers, kv_heads, head_dim = PUBLISHED[model]
    kv_cache = batch_size * 256 * 2 * layers * kv_heads * head_dim
    return 2 * (params + kv_cache) / 1e9


def _rows_by_model(stem: str) -> dict[str, list[dict[str, str]]]:
    (path,) = DEFAULT_PROFILES_DIR.glob(f"{stem}*.csv")
    rows: dict[str, list[dict[str, str]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["model"], []).append(row)
    return rows


def _reference_records(name: str) -> list[dict]:
    with (REFERENCE_DIR / name).open() as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason="../shared/reference is not here")
def test_every_measured_example_row_is_a_reference_record() -> None:
    """The rows marked measured hold the reference's raw records, read here on their own:
    eager generate for h100_noncc (every model, every batch size), the compiled static-cache
    calls after the compiling one for Llama in h100-fast_noncc."""
    aliases = {"llama-3.1-8b": "llama3-8b", "granite-7b": "granite-7b", "gemma-7b": "gemma-7b"}
    eager = {(aliases[r["model"]], r["batch"]): (r["seconds"], r["peak_gib"])
             for r in _reference_records("h100-hf-eager-2026-11-27.jsonl")
             if r.get("kind") == "gen"}
    shipped = {(r["model"], int(r["batch_size"])): (float(r["processing_time_s"]),
                                                    float(r["peak_gpu_mem_gib"]))
               for rows in _rows_by_model("batch_profiling_h100_noncc_example").values()
               for r in rows if r["source"].startswith("measured")}
    assert shipped == eager and len(eager) == 18
    static = {r["bs"]: r["seconds"] for r in _reference_records(
        "h100-hf-static-compile-2026-11-27.jsonl") if r.get("impl") == "static" and r["rep"]}
    fast = {int(r["batch_size"]): float(r["processing_time_s"])
            for r in _rows_by_model("batch_profiling_h100-fast_noncc_example")["llama3-8b"]}
    assert fast == static == {1: 1.144, 64: 2.315, 256: 5.731}


@pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason="../shared/reference is not here")
def test_shipped_examples_are_up_to_date_with_the_tool(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A drift check, not a check of the figures (those are above): the committed files are
    what the committed tool writes, so a change to either without the other is caught."""
    monkeypatch.setattr(sys, "argv", ["make_example_profiles", "--reference-dir",
                                      str(REFERENCE_DIR), "--out-dir", str(tmp_path)])
    make_example_profiles.main()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [p.name for p in SHIPPED]
    for name in written:
        assert (tmp_path / name).read_text() == (DEFAULT_PROFILES_DIR / name).read_text(), name


def test_a_profile_that_contradicts_the_server_is_named_with_its_fix() -> None:
    from sincere.profiles.selection import profile_mismatches

    models = ["granite-7b", "llama3-8b"]
    cc_from_disk = load_profiles("h100-orig_cc")  # CC on, loads from disk
    problems = profile_mismatches(cc_from_disk, {"cc_mode": "off"}, True, models)
    assert len(problems) == 3
    assert "measured with CC on but this GPU has CC off" in problems[0]
    assert "noncc profile set" in problems[0]
    assert all("HOST_CACHE is on" in p and "set HOST_CACHE to false" in p for p in problems[1:])
    assert profile_mismatches(cc_from_disk, {"cc_mode": "on"}, False, models) == []
    # Without a detected mode (no GPU) there is nothing to contradict.
    assert profile_mismatches(cc_from_disk, {"cc_mode": "unknown"}, False, models) == []


def test_the_server_refuses_to_start_on_a_contradicting_profile(tiny_models: Path,
                                                                tmp_path: Path) -> None:
    import subprocess

    from sincere.grid.children import script_argv

    result = subprocess.run(script_argv("api_scheduler_experiments.py", {
        "PROFILES": "h100-orig_noncc", "MODELS_DIR": tiny_models, "RUN_DIR": tmp_path / "run",
        "PORT": 0, "DEVICE": "cpu"}), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "times loads by disk_from_pretrained but HOST_CACHE is on" in result.stderr
    assert "--allow-profile-mismatch true" in result.stderr
