"""run_pipeline.sh's study preset, plan and checks on this CPU machine: the plan of the
original study (DRY_RUN), the refusal without a GPU, HF_TOKEN asked for in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pipeline(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    """run_pipeline.sh with its folders under tmp_path, no GPU visible (so that a GPU machine
    plans as this one does), no Hub token and no saved login."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("HF_TOKEN", "HF_HUB_OFFLINE", "STUDY", "DRY_RUN", "MODEL_KIND")}
    env.update({"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "",
                "HF_HOME": str(tmp_path / "hf"), "MODELS_DIR": str(tmp_path / "models"),
                "WORKLOADS_DIR": str(tmp_path / "workloads"),
                "PROFILES_DIR": str(tmp_path / "profiles"),
                "RESULTS_DIR": str(tmp_path / "results"), **settings})
    return subprocess.run(["bash", str(REPO_ROOT / "run_pipeline.sh")], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_original_study_is_planned_here_and_started_nowhere(tmp_path: Path) -> None:
    done = pipeline(tmp_path, STUDY="original", DRY_RUN="1", REPEATS="1")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # The preset's values, one overridden from the environment.
    assert "pipeline:   MODEL_KIND=hub" in out and "pipeline:   DECODE=static" in out
    assert "pipeline:   MEANS=4 8 12  (requests per second)" in out
    assert "pipeline:   REPEATS=1  (set in the environment; the preset's: 2)" in out
    # What this machine lacks, with the way on; the study's profiling.
    assert "FAIL  gpu: no GPU visible" in out and "but STUDY=original needs one" in out
    assert "FAIL  hub token: HF_TOKEN is not set" in out
    assert ("pipeline: 1/6 models in " in out
            and "granite-7b, gemma-7b, llama3-8b to be downloaded (hub, 46.6 GB)" in out)
    assert "batch sizes until out-of-memory, for at most 4.0 h" in out
    # 5 strategies x 3 patterns x 3 rates x 3 SLAs x 1 repeat, 20 minutes each and more.
    assert "run_experiments: 135 runs (0 already done with these parameters" in out
    [estimate] = [line for line in out.splitlines() if "for the 135 runs to do" in line]
    hours = float(estimate.split("estimated ")[1].split(" h")[0])
    assert 135 * 1200 / 3600 < hours < 135 * (1200 + 600 + 600) / 3600
    assert out.rstrip().endswith("pipeline: DRY_RUN=1: the plan above; nothing was started")
    assert not any((tmp_path / name).exists()
                   for name in ("models", "workloads", "profiles", "results"))


def test_the_study_refuses_to_start_without_a_gpu(tmp_path: Path) -> None:
    done = pipeline(tmp_path, STUDY="original", HF_TOKEN="hf_test")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "FAIL  gpu: no GPU visible" in done.stdout
    assert "DRY_RUN=1 shows the plan without one" in done.stdout
    assert "stopped before starting anything" in done.stderr
    assert "run_experiments" not in done.stdout  # stopped before anything imports torch
    assert not (tmp_path / "models").exists()


def test_hub_models_without_a_token_stop_with_how_to_export_it(tmp_path: Path) -> None:
    done = pipeline(tmp_path, MODEL_KIND="hub", REQUIRE_GPU="0")
    assert done.returncode == 2, done.stdout + done.stderr
    [token] = [line for line in done.stdout.splitlines() if "hub token" in line]
    assert token.startswith("  FAIL  hub token: HF_TOKEN is not set")
    assert "export HF_TOKEN=<your token>" in token


def test_an_unknown_study_is_refused(tmp_path: Path) -> None:
    done = pipeline(tmp_path, STUDY="nope")
    assert done.returncode == 2
    assert "no study preset 'nope'; known: original" in done.stderr
