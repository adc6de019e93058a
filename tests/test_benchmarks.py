"""The swap benchmark and the GPU check's Python part, run on the CPU with the tiny models, and
the GPU check's refusal on a machine without a GPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from sincere.architectures import HUB_IDS
from sincere.profiles import load_profiles

REPO_ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_swap_prints_both_paths_and_their_ratio_for_each_model(
        tiny_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = benchmark("bench_swap").main(["--models-dir", str(tiny_models), "--rounds", "2",
                                           "--warmup", "0"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line.split() for line in lines if line.split()[:1] == ["model"])
    assert header[-1] == "disk/cache"
    assert {"disk_mean_s", "host_cache_mean_s", "disk_unload_mean_s",
            "host_cache_unload_mean_s"} <= set(header)
    table = {line.split()[0]: dict(zip(header, line.split(), strict=True))
             for line in lines if line.split()[:1] and line.split()[0] in HUB_IDS}
    assert sorted(table) == sorted(HUB_IDS)
    for row in table.values():
        assert float(row["disk/cache"]) == pytest.approx(
            float(row["disk_mean_s"]) / float(row["host_cache_mean_s"]), rel=0.02, abs=0.01)


def test_gpu_profile_check_dry_run_writes_profiles_the_simulator_reads(
        tiny_models: Path, tmp_path: Path) -> None:
    status = benchmark("gpu_profile_check").main([
        "--device", "cpu", "--models-dir", str(tiny_models), "--profiles-dir", str(tmp_path),
        "--batch-sizes", "2", "1", "--iterations", "1", "--warmup", "0", "--max-new-tokens",
        "2", "--prompts", "16", "--monitor-period-s", "0.1"])
    assert status == 0
    assert len(list(tmp_path.glob("best_batch_cpu_noncc_*.csv"))) == 1
    profiles = load_profiles("cpu_noncc", tmp_path)
    assert sorted(profiles.models) == sorted(HUB_IDS)
    assert {profiles[m].largest_batch(2) for m in HUB_IDS} == {2}


@no_gpu
def test_gpu_profile_check_refuses_without_a_gpu(tiny_models: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    status = benchmark("gpu_profile_check").main(["--models-dir", str(tiny_models),
                                                  "--profiles-dir", str(tmp_path)])
    assert status == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@no_gpu
def test_gpu_check_script_stops_at_once_without_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "MODELS_DIR": str(tmp_path / "models"),
           "PYTHON": sys.executable}
    completed = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2
    assert "no usable GPU" in completed.stderr and "DEVICE=cpu" in completed.stderr
    assert not (tmp_path / "models").exists()


def test_bench_fast_engine_smoke_mode_checks_the_tokens(
        tiny_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a CPU: a swap from the host cache and the compiled engine give the plain tokens."""
    status = benchmark("bench_fast_engine").main([
        "--models-dir", str(tiny_models), "--models", "granite-7b", "--swaps", "1", "--runs",
        "1", "--max-new-tokens", "6", "--compile-backend", "eager"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "smoke mode" in out and "tokens: same as the plain path" in out
    assert "float32, HF pipeline (original)" in out and "static+compile" in out


def test_what_it_buys_compares_the_profile_sets(capsys: pytest.CaptureFixture[str]) -> None:
    status = benchmark("what_it_buys").main([
        "--patterns", "gamma", "--repeats", "1", "--duration-s", "120", "--workers", "1",
        "--strategies", "BestBatch+Timer"])
    out = capsys.readouterr().out
    assert status == 0
    for name in ("h100-orig_noncc", "h100_noncc", "h100-fast_noncc", "BestBatch+Timer"):
        assert name in out
