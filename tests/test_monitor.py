"""The sampler's CSV and schedule, and CC / environment detection against a fake NVML binding."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pynvml
import pytest

from sincere.host.environment import (
    GIB,
    detect_cc,
    environment_block,
    get_sys_info,
    parse_cc_status,
)
from sincere.host.monitor import Monitor, visible_gpu
from sincere.schemas import MONITOR_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[1]
GPU_COLUMNS = MONITOR_COLUMNS[4:]
ABSENT = object()  # marks a function an old binding does not have


class FakeNvml:
    """Stands in for the pynvml module: each NVML function returns or raises a preset answer.

    An answer that is callable is called with the function's arguments (for answers that change
    from call to call); an exception instance is raised; ``ABSENT`` makes the attribute missing.
    """

    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, **answers: Any) -> None:
        self.answers: dict[str, Any] = {
            "nvmlInit": None,
            "nvmlShutdown": None,
            "nvmlDeviceGetCount": 1,
            "nvmlDeviceGetHandleByIndex": "gpu0",
            "nvmlDeviceGetName": "NVIDIA H100 80GB HBM3",
            "nvmlSystemGetDriverVersion": "550.54.14",
            "nvmlSystemGetCudaDriverVersion": 12040,
            "nvmlDeviceGetMemoryInfo": pynvml.c_nvmlMemory_t(
                total=80 * GIB, free=64 * GIB, used=16 * GIB),
            "nvmlDeviceGetUtilizationRates": pynvml.c_nvmlUtilization_t(gpu=35, memory=12),
            "nvmlDeviceGetPowerUsage": 250_500,  # milliwatts
            "nvmlDeviceGetClockInfo": 1980,
            "nvmlDeviceGetTemperature": 41,
            "nvmlSystemGetConfComputeState": pynvml.c_nvmlConfComputeSystemState_t(
                environment=0, ccFeature=0, devToolsMode=0),
            "nvmlSystemGetConfComputeGpusReadyState": 0,
            "nvmlSystemGetConfComputeCapabilities": pynvml.c_nvmlConfComputeSystemCaps_t(
                cpuCaps=0, gpusCaps=1),
            "nvmlDeviceGetConfComputeMemSizeInfo": pynvml.c_nvmlConfComputeMemSizeInfo_t(
                protectedMemSizeKib=0, unprotectedMemSizeKib=0),
        }
        self.answers.update(answers)
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        answer = self.__dict__["answers"].get(name, ABSENT)
        if answer is ABSENT:
            raise AttributeError(name)

        def call(*args: Any) -> Any:
            self.calls.append(name)
            value = answer(*args) if callable(answer) else answer
            if isinstance(value, BaseException):
                raise value
            return value
        return call


def cc_on_nvml() -> FakeNvml:
    """A CC-on H100 on an AMD SEV-SNP host, as NVML would report it."""
    return FakeNvml(
        nvmlSystemGetConfComputeState=pynvml.c_nvmlConfComputeSystemState_t(
            environment=2, ccFeature=1, devToolsMode=0),
        nvmlSystemGetConfComputeGpusReadyState=1,
        nvmlSystemGetConfComputeCapabilities=pynvml.c_nvmlConfComputeSystemCaps_t(
            cpuCaps=3, gpusCaps=1),
        nvmlDeviceGetConfComputeMemSizeInfo=pynvml.c_nvmlConfComputeMemSizeInfo_t(
            protectedMemSizeKib=79 * 2**20, unprotectedMemSizeKib=2**20),
    )


def no_library() -> FakeNvml:
    return FakeNvml(nvmlInit=pynvml.NVMLError_LibraryNotFound())


def fake_smi(outputs: dict[str, str | BaseException]) -> Callable[[Sequence[str], float], str]:
    """A runner for ``nvidia-smi conf-compute FLAG`` answering from ``outputs`` by flag."""
    def run(args: Sequence[str], timeout_s: float) -> str:
        answer = outputs[args[-1]]
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return run


def smi_missing(args: Sequence[str], timeout_s: float) -> str:
    raise FileNotFoundError(2, "No such file or directory", "nvidia-smi")


def smi_must_not_run(args: Sequence[str], timeout_s: float) -> str:
    raise AssertionError(f"nvidia-smi {args} ran although NVML had decided")


class StepClock:
    """A monotonic clock that returns the next preset time on each call."""

    def __init__(self, times: Sequence[float]) -> None:
        self._times: Iterator[float] = iter(times)

    def __call__(self) -> float:
        return next(self._times)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


# ------------------------------------------------------------------------------- sampler

def test_no_file_until_opened_and_stop_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "monitor.csv"
    monitor = Monitor(out, nvml=no_library())
    assert not out.exists()
    monitor.sample_once()
    monitor.stop()
    monitor.stop()
    assert out.exists()
    with pytest.raises(RuntimeError):
        monitor.sample_once()


def test_csv_header_and_empty_gpu_columns_without_nvml(tmp_path: Path) -> None:
    out = tmp_path / "run" / "monitor.csv"
    clock = StepClock([100.0, 100.5, 101.0])  # start, then one time per sample
    monitor = Monitor(out, nvml=no_library(), clock=clock, wall_clock=lambda: 1.7e9)
    monitor.sample_once()
    # Each row is flushed as written: readable before the monitor stops.
    assert len(read_rows(out)[1]) == 1
    monitor.sample_once()
    monitor.stop()

    header, rows = read_rows(out)
    assert header == MONITOR_COLUMNS
    assert [float(r["t_s"]) for r in rows] == [0.5, 1.0]
    assert [float(r["epoch_s"]) for r in rows] == [1.7e9, 1.7e9]
    for row in rows:
        assert 0.0 <= float(row["cpu_pct"]) <= 100.0
        assert float(row["ram_used_gib"]) > 0.0
        assert [row[c] for c in GPU_COLUMNS] == [""] * len(GPU_COLUMNS)
    assert "LibraryNotFound" in (monitor.nvml_error or "")


def test_gpu_columns_from_nvml_and_one_failing_reading_leaves_one_gap(tmp_path: Path) -> None:
    out = tmp_path / "monitor.csv"
    nvml = FakeNvml(nvmlDeviceGetTemperature=pynvml.NVMLError_NotSupported())
    monitor = Monitor(out, nvml=nvml)
    monitor.sample_once()
    monitor.stop()
    _, rows = read_rows(out)
    assert len(rows) == 1
    row = rows[0]
    assert float(row["gpu_util_pct"]) == 35
    assert float(row["gpu_mem_util_pct"]) == 12
    assert float(row["gpu_mem_used_gib"]) == pytest.approx(16.0)
    assert float(row["gpu_power_w"]) == pytest.approx(250.5)
    assert float(row["sm_clock_mhz"]) == 1980
    assert row["temperature_c"] == ""
    assert nvml.calls.count("nvmlInit") == nvml.calls.count("nvmlShutdown") == 1


@pytest.mark.parametrize(("visible", "gpu"), [
    (None, 0), ("3", 3), ("2,0", 2), ("GPU-5f0c9e1a-77b2", "GPU-5f0c9e1a-77b2"), ("", None),
    ("-1", None)])
def test_the_monitor_samples_the_gpu_cuda_lets_the_run_see(visible: str | None,
                                                           gpu: int | str | None) -> None:
    """A Ray task holding GPU 3 runs with CUDA_VISIBLE_DEVICES=3; NVML ignores the variable
    and numbers every GPU, so the sampler must be told which to read."""
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert visible_gpu(environ) == gpu
    utilisation = {"gpu0": 11, "gpu2": 22, "gpu3": 33, "uuid": 44}
    nvml = FakeNvml(
        nvmlDeviceGetHandleByIndex=lambda index: f"gpu{index}",
        nvmlDeviceGetHandleByUUID=lambda uuid: "uuid",
        nvmlDeviceGetUtilizationRates=lambda handle: pynvml.c_nvmlUtilization_t(
            gpu=utilisation[handle], memory=5))
    monitor = Monitor(None, gpu_index=gpu, nvml=nvml)
    sample = monitor.sample_once()
    monitor.stop()
    expected = {0: 11, 2: 22, 3: 33, "GPU-5f0c9e1a-77b2": 44, None: None}[gpu]
    assert sample["gpu_util_pct"] == expected


def test_means_over_a_window(tmp_path: Path) -> None:
    utilisations = iter([10, 20, 30, 40])
    nvml = FakeNvml(nvmlDeviceGetUtilizationRates=lambda handle: pynvml.c_nvmlUtilization_t(
        gpu=next(utilisations), memory=5))
    clock = StepClock([1.0, 2.0, 3.0, 4.0])  # t_s of the four samples
    monitor = Monitor(None, nvml=nvml, clock=clock, start_monotonic=0.0)
    for _ in range(4):
        monitor.sample_once()
    monitor.stop()

    assert monitor.means()["gpu_util_pct"] == pytest.approx(25.0)
    window = monitor.means(since_t_s=2.0, until_t_s=3.0)  # inclusive: the samples at 2 and 3
    assert window["gpu_util_pct"] == pytest.approx(25.0)
    assert monitor.means(since_t_s=3.5)["gpu_util_pct"] == pytest.approx(40.0)
    assert window["gpu_power_w"] == pytest.approx(250.5)
    assert window["cpu_pct"] is not None
    assert set(window) == set(MONITOR_COLUMNS[2:])
    assert all(v is None for v in monitor.means(since_t_s=10.0).values())


def test_means_skip_missing_gpu_readings() -> None:
    monitor = Monitor(None, nvml=no_library())
    monitor.sample_once()
    means = monitor.means()
    monitor.stop()
    assert means["gpu_util_pct"] is None
    assert means["ram_used_gib"] is not None


class FakeTime:
    """The monitor thread's time, faked: it moves only when the thread waits for its next tick
    (by the time it waits) or when a GPU reading takes ``reading_s``; after ``samples`` samples
    the wait reports the monitor stopped, so the thread ends on its own and sets ``done``."""

    def __init__(self, samples: int, reading_s: float) -> None:
        self.now_s, self.samples, self.reading_s = 0.0, samples, reading_s
        self.count = 0
        self.done = threading.Event()

    def clock(self) -> float:
        return self.now_s

    def wait(self, seconds: float) -> bool:
        self.now_s += seconds
        if self.count >= self.samples:
            self.done.set()
            return True
        return False

    def utilisation(self, handle: str) -> Any:
        self.count += 1
        self.now_s += self.reading_s
        return pynvml.c_nvmlUtilization_t(gpu=50, memory=5)


def sample_times(tmp_path: Path, period_s: float, samples: int, reading_s: float) -> list[float]:
    """The t_s the monitor's own thread writes to monitor.csv on the fake time."""
    fake = FakeTime(samples, reading_s)
    out = tmp_path / "monitor.csv"
    monitor = Monitor(out, period_s=period_s, clock=fake.clock, wait=fake.wait,
                      nvml=FakeNvml(nvmlDeviceGetUtilizationRates=fake.utilisation)).start()
    assert fake.done.wait(60), "the monitor thread never asked to wait"
    monitor.stop()
    _, rows = read_rows(out)
    assert len(rows) == monitor.sample_count == samples
    return [float(r["t_s"]) for r in rows]


def test_thread_samples_on_a_fixed_period(tmp_path: Path) -> None:
    """Each sample takes 1/16 s; the ticks stay at k * 1/4 s, not drifting by the sampling time
    (which would give 0, 0.3125, 0.625, ...)."""
    assert sample_times(tmp_path, 0.25, 8, 0.0625) == [0.25 * k for k in range(8)]


def test_slow_samples_skip_missed_ticks_instead_of_bunching(tmp_path: Path) -> None:
    """Each sample takes 0.625 s, two and a half periods of 0.25 s: the sample at 0 ends at
    0.625, so ticks 0.25 and 0.5 are missed and the next sample is at tick 0.75 (ends 1.375),
    then 1.5, then 2.25; never a burst of the missed ticks."""
    assert sample_times(tmp_path, 0.25, 4, 0.625) == [0.0, 0.75, 1.5, 2.25]


# -------------------------------------------------------------------------- CC detection

def test_cc_unknown_when_binding_and_nvidia_smi_are_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` now fails
    cc = detect_cc(run=smi_missing)
    assert cc["cc_mode"] == "unknown"
    assert cc["cc_source"] is None
    assert "ImportError" in cc["nvml_error"] or "ModuleNotFoundError" in cc["nvml_error"]
    assert "FileNotFoundError" in cc["nvidia_smi_error"]


@pytest.mark.parametrize("init_error", [pynvml.NVMLError_LibraryNotFound(),
                                        pynvml.NVMLError_DriverNotLoaded()])
def test_cc_unknown_when_nvml_cannot_start(init_error: Exception) -> None:
    cc = detect_cc(nvml=FakeNvml(nvmlInit=init_error), run=smi_missing)
    assert (cc["cc_mode"], cc["cc_source"]) == ("unknown", None)
    assert type(init_error).__name__ in cc["nvml_error"]
    assert cc["nvidia_smi_error"]


def test_cc_on_from_nvml_with_raw_fields() -> None:
    cc = detect_cc(nvml=cc_on_nvml(), run=smi_must_not_run)
    assert (cc["cc_mode"], cc["cc_source"]) == ("on", "nvml")
    assert (cc["cc_environment"], cc["cc_feature"], cc["cc_devtools_mode"]) == (2, 1, 0)
    assert cc["cc_gpus_ready_state"] == 1
    assert (cc["cc_cpu_caps"], cc["cpu_tee"], cc["cc_gpus_caps"]) == (3, "AMD SEV-SNP", 1)
    assert cc["cc_protected_mem_kib"] == 79 * 2**20
    assert cc["cc_unprotected_mem_kib"] == 2**20
    assert cc["nvml_error"] is None and cc["nvml_field_errors"] == {}
    json.dumps(cc)


def test_cc_off_from_nvml() -> None:
    cc = detect_cc(nvml=FakeNvml(), run=smi_must_not_run)
    assert (cc["cc_mode"], cc["cc_source"]) == ("off", "nvml")
    assert (cc["cc_feature"], cc["cc_environment"], cc["cc_gpus_ready_state"]) == (0, 0, 0)
    assert cc["cpu_tee"] == "none"


def test_cc_state_read_but_details_unsupported() -> None:
    nvml = cc_on_nvml()
    nvml.answers["nvmlSystemGetConfComputeCapabilities"] = ABSENT  # an older binding
    nvml.answers["nvmlDeviceGetConfComputeMemSizeInfo"] = pynvml.NVMLError_NotSupported()
    cc = detect_cc(nvml=nvml, run=smi_must_not_run)
    assert (cc["cc_mode"], cc["cc_source"]) == ("on", "nvml")
    assert cc["cpu_tee"] is None and cc["cc_protected_mem_kib"] is None
    assert "AttributeError" in cc["nvml_field_errors"]["capabilities"]
    assert "NotSupported" in cc["nvml_field_errors"]["mem_size_info"]


@pytest.mark.parametrize(("state_answer", "error_name"), [
    (pynvml.NVMLError_NotSupported(), "NVMLError_NotSupported"),
    (pynvml.NVMLError_Uninitialized(), "NVMLError_Uninitialized"),
    (ABSENT, "AttributeError"),
])
@pytest.mark.parametrize(("smi_status", "expected_mode"), [
    ("CC status: ON\n", "on"),
    ("CC status: OFF\n", "off"),
])
def test_cc_falls_back_to_nvidia_smi(state_answer: Any, error_name: str, smi_status: str,
                                     expected_mode: str) -> None:
    nvml = FakeNvml(nvmlSystemGetConfComputeState=state_answer)
    run = fake_smi({"-f": smi_status, "-grs": "Confidential Compute GPUs Ready state: ready\n"})
    cc = detect_cc(nvml=nvml, run=run)
    assert (cc["cc_mode"], cc["cc_source"]) == (expected_mode, "nvidia-smi")
    assert error_name in cc["nvml_error"]
    assert cc["nvidia_smi_cc_status"] == smi_status.strip()
    assert cc["nvidia_smi_ready_state"] == "ready"
    assert cc["nvidia_smi_error"] is None


@pytest.mark.parametrize("smi_answer", [
    "Invalid combination of input arguments.\n",
    "CC status: MAYBE\n",
    "",
    subprocess.TimeoutExpired(["nvidia-smi"], 5.0),
    subprocess.CalledProcessError(1, ["nvidia-smi"]),
])
def test_cc_unknown_when_nvidia_smi_answer_is_unusable(smi_answer: Any) -> None:
    cc = detect_cc(nvml=no_library(), run=fake_smi({"-f": smi_answer, "-grs": ""}))
    assert (cc["cc_mode"], cc["cc_source"]) == ("unknown", None)
    assert cc["nvml_error"] and cc["nvidia_smi_error"]


@pytest.mark.parametrize(("text", "status"), [
    ("CC status: ON", "on"),
    ("  CC status:   OFF  \n", "off"),
    ("Confidential Compute status: ON", "on"),
    ("CC status: ONLINE", None),
    ("CC mode: ON", None),
])
def test_parse_cc_status(text: str, status: str | None) -> None:
    assert parse_cc_status(text) == status


# ---------------------------------------------------------------------- environment

def test_sys_info_without_gpu_is_json_serialisable() -> None:
    info = get_sys_info(nvml=no_library(), run=smi_missing)
    assert json.loads(json.dumps(info)) == info
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["cpu_count_logical"] >= 1 and info["ram_total_gib"] > 0
    assert info["driver_version"] is None
    assert info["cc_mode"] == "unknown"


def test_environment_block_with_a_cc_gpu() -> None:
    env = environment_block(nvml=cc_on_nvml(), run=smi_must_not_run)
    assert json.loads(json.dumps(env)) == env  # no ctypes structs leak out
    assert env["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert env["driver_version"] == "550.54.14"
    assert env["cuda_driver_version"] == "12.4"
    assert env["gpu_mem_total_gib"] == pytest.approx(80.0)
    assert (env["cc_mode"], env["cpu_tee"]) == ("on", "AMD SEV-SNP")


# --------------------------------------------------------------------------- script

def test_script_writes_samples(tmp_path: Path) -> None:
    out = tmp_path / "monitor.csv"
    completed = subprocess.run(
        [sys.executable, "monitor.py", "--out", str(out), "--duration-s", "0.3",
         "--period-s", "0.05"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "cc_mode" in completed.stdout
    header, rows = read_rows(out)
    assert header == MONITOR_COLUMNS
    # How many ticks 0.3 s holds depends on the machine's load (the schedule is checked on a
    # fake clock above); what the script wrote is what it says it wrote, in time order.
    times_s = [float(r["t_s"]) for r in rows]
    assert rows and all(b > a for a, b in itertools.pairwise(times_s))
    assert f"wrote {len(rows)} samples to {out}" in completed.stdout


# ------------------------------------------- the real binding over a fake NVML C library

class FakeNvmlLibrary:
    """Stands in for libnvidia-ml.so below the real ``pynvml`` module: each C function writes
    its outputs through the pointers pynvml passes and returns an NVML status code."""

    def __init__(self, cc_feature: int = 0, environment: int = 0, cpu_caps: int = 0,
                 status: dict[str, int] | None = None, missing: Sequence[str] = ()) -> None:
        self.values = {"cc_feature": cc_feature, "environment": environment,
                       "cpu_caps": cpu_caps}
        self.status = status or {}
        for name in missing:  # an older driver: the symbol is not there at all
            setattr(self, name, None)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value is None:
            raise AttributeError(name)
        return value

    def _status(self, name: str) -> int:
        return self.status.get(name, pynvml.NVML_SUCCESS)

    def nvmlInitWithFlags(self, flags: int) -> int:
        return self._status("nvmlInitWithFlags")

    def nvmlShutdown(self) -> int:
        return pynvml.NVML_SUCCESS

    def nvmlErrorString(self, code: int) -> bytes:
        return b"fake NVML error"

    def nvmlSystemGetConfComputeState(self, state: Any) -> int:
        state._obj.environment = self.values["environment"]
        state._obj.ccFeature = self.values["cc_feature"]
        state._obj.devToolsMode = 0
        return self._status("nvmlSystemGetConfComputeState")

    def nvmlSystemGetConfComputeGpusReadyState(self, ready: Any) -> int:
        ready._obj.value = self.values["cc_feature"]
        return pynvml.NVML_SUCCESS

    def nvmlSystemGetConfComputeCapabilities(self, caps: Any) -> int:
        caps._obj.cpuCaps, caps._obj.gpusCaps = self.values["cpu_caps"], 1
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, handle: Any) -> int:
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetConfComputeMemSizeInfo(self, handle: Any, info: Any) -> int:
        info._obj.protectedMemSizeKib = 79 * 2**20 if self.values["cc_feature"] else 0
        info._obj.unprotectedMemSizeKib = 2**20 if self.values["cc_feature"] else 0
        return pynvml.NVML_SUCCESS


def no_shared_library(name: str) -> Any:
    raise OSError(f"{name}: cannot open shared object file: No such file or directory")


@pytest.fixture
def nvml_library(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Install a FakeNvmlLibrary (or none at all) under the real pynvml module."""
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})

    def install(library: FakeNvmlLibrary | None) -> None:
        if library is None:  # dlopen("libnvidia-ml.so.1") fails, as on a machine with no driver
            monkeypatch.setattr(pynvml, "nvmlLib", None)
            monkeypatch.setattr(pynvml, "CDLL", no_shared_library)
        else:
            monkeypatch.setattr(pynvml, "nvmlLib", library)
    return install


@pytest.mark.parametrize(("library", "mode", "cpu_tee"), [
    (FakeNvmlLibrary(cc_feature=1, environment=2, cpu_caps=2), "on", "Intel TDX"),
    (FakeNvmlLibrary(cc_feature=0, cpu_caps=0), "off", "none"),
])
def test_cc_mode_through_the_real_binding(nvml_library: Callable[..., None],
                                          library: FakeNvmlLibrary, mode: str,
                                          cpu_tee: str) -> None:
    nvml_library(library)
    cc = detect_cc(run=smi_must_not_run)  # imports and drives the real pynvml
    assert (cc["cc_mode"], cc["cc_source"], cc["cpu_tee"]) == (mode, "nvml", cpu_tee)
    assert cc["cc_gpus_ready_state"] == (mode == "on")
    assert cc["cc_protected_mem_kib"] == (79 * 2**20 if mode == "on" else 0)
    assert cc["nvml_field_errors"] == {}
    json.dumps(cc)


@pytest.mark.parametrize(("library", "error_name"), [
    (None, "NVMLError_LibraryNotFound"),
    (FakeNvmlLibrary(status={"nvmlInitWithFlags": pynvml.NVML_ERROR_DRIVER_NOT_LOADED}),
     "NVMLError_DriverNotLoaded"),
    (FakeNvmlLibrary(status={"nvmlSystemGetConfComputeState": pynvml.NVML_ERROR_NOT_SUPPORTED}),
     "NVMLError_NotSupported"),
    (FakeNvmlLibrary(missing=["nvmlSystemGetConfComputeState"]), "NVMLError_FunctionNotFound"),
])
def test_cc_unknown_when_the_real_binding_fails(nvml_library: Callable[..., None],
                                                library: FakeNvmlLibrary | None,
                                                error_name: str) -> None:
    nvml_library(library)
    cc = detect_cc(run=smi_missing)
    assert (cc["cc_mode"], cc["cc_source"]) == ("unknown", None)
    assert cc["nvml_error"].startswith(error_name)
    assert "FileNotFoundError" in cc["nvidia_smi_error"]


def test_cc_from_nvidia_smi_when_the_binding_is_not_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    cc = detect_cc(run=fake_smi({"-f": "CC status: ON\n", "-grs": "ready state: not-ready\n"}))
    assert (cc["cc_mode"], cc["cc_source"]) == ("on", "nvidia-smi")
    assert cc["nvidia_smi_ready_state"] == "not-ready"


def test_monitor_without_the_binding_leaves_gpu_columns_empty(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    out = tmp_path / "monitor.csv"
    monitor = Monitor(out)
    monitor.sample_once()
    monitor.stop()
    _, rows = read_rows(out)
    assert [rows[0][c] for c in GPU_COLUMNS] == [""] * len(GPU_COLUMNS)
    assert rows[0]["cpu_pct"] != ""
    assert "pynvml" in (monitor.nvml_error or "")
