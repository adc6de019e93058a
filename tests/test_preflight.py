"""The checks before a long job, each failure with its fix: the Hub token, model folders of
another kind, free disk, a GPU and its CC mode (sincere/host/preflight.py,
sincere/grid/study.py), and a profile that does not fit what is served
(sincere/profiles/selection.py)."""

from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import pytest

from sincere.assets.model_store import MARKER_FILE
from sincere.grid import study
from sincere.host.preflight import DiskNeed, Gpu, find_gpu, free_disk, gpu_check, hub_token
from sincere.profiles.profile_set import ProfileSet
from sincere.profiles.selection import fit_problems
from tests.profile_fixtures import model
from tests.test_monitor import FakeNvml, cc_on_nvml, no_library, smi_missing

MODELS = ["granite-7b", "gemma-7b", "llama3-8b"]


def test_hub_token_says_to_export_it_when_hub_models_are_missing() -> None:
    check = hub_token(MODELS, environ={}, stored_token=lambda: None)
    assert not check.ok
    assert "HF_TOKEN is not set" in check.message
    assert "export HF_TOKEN=<your token>" in check.message
    assert "granite-7b, gemma-7b, llama3-8b" in check.message


def test_hub_token_is_found_in_the_environment_or_a_saved_login() -> None:
    assert hub_token(MODELS, environ={"HF_TOKEN": "hf_x"}, stored_token=lambda: None).ok
    assert hub_token(MODELS, environ={}, stored_token=lambda: "hf_saved").ok
    assert hub_token([], environ={}, stored_token=lambda: None).ok  # nothing to download


def test_hub_offline_refuses_the_download() -> None:
    check = hub_token(MODELS, environ={"HF_TOKEN": "hf_x", "HF_HUB_OFFLINE": "1"},
                      stored_token=lambda: None)
    assert not check.ok and "unset it" in check.message


Usage = namedtuple("Usage", "total used free")


def test_free_disk_sums_what_goes_to_one_disk_and_names_the_settings(tmp_path: Path) -> None:
    needs = [DiskNeed(tmp_path / "models", 46.6, "models", "MODELS_DIR"),
             DiskNeed(tmp_path / "results", 1.4, "results", "RESULTS_DIR")]
    [short] = free_disk(needs, usage=lambda _path: Usage(100e9, 80e9, 20e9))
    assert not short.ok
    assert short.message == (
        f"20.0 GB free on {tmp_path.resolve()}, 48.0 GB needed (models 46.6 GB, results 1.4 GB): "
        "free 28.0 GB there, or point MODELS_DIR or RESULTS_DIR at a disk with room")
    [room] = free_disk(needs, usage=lambda _path: Usage(100e9, 0.0, 100e9))
    assert room.ok and room.message.startswith("100.0 GB free")


def test_a_visible_gpu_and_its_cc_mode() -> None:
    gpu = find_gpu(nvml=cc_on_nvml(), run=smi_missing, environ={})
    assert gpu.count == 1 and gpu.cc_mode == "on"
    assert gpu.describe() == "1 GPU visible (NVIDIA H100 80GB HBM3), CC mode on (nvml)"
    assert gpu_check(gpu, "STUDY=original", "DRY_RUN=1 plans").ok


def test_no_gpu_refuses_settings_that_need_one_and_says_how_to_go_on() -> None:
    gpu = find_gpu(nvml=no_library(), run=smi_missing, environ={})
    assert gpu.count == 0 and gpu.cc_mode == "unknown"
    check = gpu_check(gpu, "STUDY=original", "DRY_RUN=1 shows the plan without one")
    assert not check.ok
    assert check.message.startswith("no GPU visible (NVML: NVMLError_LibraryNotFound")
    assert "but STUDY=original needs one" in check.message
    assert check.message.endswith("DRY_RUN=1 shows the plan without one")
    assert gpu_check(gpu, "", "").ok  # the CPU demo needs none


def test_cuda_visible_devices_can_hide_every_gpu() -> None:
    gpu = find_gpu(nvml=FakeNvml(), run=smi_missing, environ={"CUDA_VISIBLE_DEVICES": ""})
    assert gpu.count == 0 and "CUDA_VISIBLE_DEVICES hides every GPU" in gpu.describe()


def fake_model_folder(folder: Path, kind: str) -> None:
    """What is_complete looks for, without weights worth loading."""
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (folder / name).write_text("{}")
    (folder / MARKER_FILE).write_text(json.dumps({"kind": kind}))


def test_models_of_another_kind_are_refused_with_the_fix(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login
    fake_model_folder(tmp_path / "models" / "llama3-8b", "tiny")
    fake_model_folder(tmp_path / "models" / "gemma-7b", "hub")
    wanted, other = study.models_to_fetch(tmp_path / "models", "hub")
    # llama must come from the Hub too, into another folder: its token is needed.
    assert wanted == ["granite-7b", "llama3-8b"]
    assert other == [f"{tmp_path / 'models' / 'llama3-8b'} is a tiny model"]
    cfg = study_config(tmp_path, MODEL_KIND="hub", REQUIRE_GPU="0")
    found = {c.name: c for c in study.checks(cfg, Gpu(0, None, {"cc_mode": "unknown"}))}
    assert "granite-7b, llama3-8b must come from the Hub" in found["hub token"].message
    assert not found["models"].ok
    assert "MODEL_KIND is hub" in found["models"].message
    assert "set MODELS_DIR to another folder" in found["models"].message
    assert found["gpu"].ok  # REQUIRE_GPU=0


def study_config(tmp_path: Path, **values: object):
    """The module's constants, as run_pipeline.sh passes them, with folders under tmp_path."""
    cfg = study.parse_settings([])
    cfg.MODELS_DIR, cfg.RESULTS_DIR = str(tmp_path / "models"), str(tmp_path / "results")
    cfg.WORKLOADS_DIR = str(tmp_path / "workloads")
    for name, value in values.items():
        setattr(cfg, name, value)
    return cfg


def test_the_study_needs_a_gpu_unless_told_otherwise(tmp_path: Path) -> None:
    assert study.gpu_needed_by(study_config(tmp_path, STUDY="original")) == "STUDY=original"
    assert study.gpu_needed_by(study_config(tmp_path, MODEL_KIND="random")) == \
        "MODEL_KIND=random"
    assert study.gpu_needed_by(study_config(tmp_path)) == ""  # the tiny CPU demo
    assert study.gpu_needed_by(study_config(tmp_path, STUDY="original", REQUIRE_GPU="0")) == ""
    assert study.gpu_needed_by(study_config(tmp_path, REQUIRE_GPU="1")) == "REQUIRE_GPU=1"


def test_the_preset_and_what_the_environment_changed(tmp_path: Path) -> None:
    preset = study.STUDIES["original"].as_dict()
    assert preset["MEANS"] == "4 8 12" and preset["REPEATS"] == "2"
    lines = study.study_lines("original", {"MEANS": [4.0], "SLAS": [40.0, 60.0, 80.0],
                                           "DURATION_S": 1200.0})
    assert "  MEANS=4  (set in the environment; the preset's: 4 8 12)" in lines
    assert "  SLAS=40 60 80  (seconds)" in lines
    assert "  DURATION_S=1200  (20-minute runs)" in lines


def profile_set(loading_file: str, device: str, size_gb: float = 1.0) -> ProfileSet:
    models = {m: replace(model(m, 1.0, 0.1), size_gb=size_gb) for m in ("a", "b")}
    return ProfileSet(models, device, "off", loading_file, "batch.csv",
                      sources=("measured: AMD EPYC, 2026-12-07",))


def test_a_profile_of_other_models_or_another_engine_does_not_fit() -> None:
    measured = profile_set("model_loading_times_cpu-static_noncc_20261207-1.csv", "cpu-static",
                           size_gb=13.5)
    problems = fit_problems(measured, ["a", "b", "c"], {"a": 13.0, "b": 0.03}, "eager")
    assert problems[0].startswith("the profile model_loading_times_cpu-static_noncc_20261207-1."
                                  "csv has no rows for c: profile the models to be served")
    assert "(b 13.50 GB profiled, 0.03 GB served)" in problems[1]
    assert "measured with the static engine but DECODE is eager" in problems[2]
    assert "FORCE_PROFILE=1" in problems[2]
    assert fit_problems(measured, ["a", "b"], {"a": 13.0, "b": 27.0}, "static") == []


def test_shipped_example_profiles_are_not_held_to_an_engine() -> None:
    example = profile_set("model_loading_times_h100-fast_noncc_example-20261127.csv",
                          "h100-fast", size_gb=16.0)
    assert fit_problems(example, ["a"], {"a": 16.06}, "static") == []
