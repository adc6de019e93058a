"""CPU and GPU sampling into ``monitor.csv``, and the environment / confidential-computing snapshot.

NVML is reached only through a module object (``pynvml`` by default) and ``nvidia-smi`` only
through a runner function, both passed in, so tests can replace their answers at the binding's
boundary. Nothing here ever raises because a GPU, NVML or ``nvidia-smi`` is missing: the missing
readings are empty (``None``) and the reason is recorded.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import importlib.metadata
import math
import platform
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self, TextIO

import psutil

from sincere.schemas import MONITOR_COLUMNS

try:
    from pynvml import NVMLError
except ImportError:  # the binding is not installed: nothing can raise its errors
    class NVMLError(Exception):  # type: ignore[no-redef]
        """Stands in for ``pynvml.NVMLError`` when nvidia-ml-py is absent."""

# What an NVML call may raise: its own errors (NotSupported, LibraryNotFound, Uninitialized, ...),
# AttributeError when an old binding lacks the function, OSError from loading the library.
NVML_FAILURES = (NVMLError, AttributeError, OSError)
# What running nvidia-smi may raise: missing binary, non-zero exit, timeout.
NVIDIA_SMI_FAILURES = (OSError, subprocess.SubprocessError)

GIB = 2**30
NVIDIA_SMI_TIMEOUT_S = 5.0
READING_COLUMNS = MONITOR_COLUMNS[2:]  # the measured columns (all but t_s, epoch_s)

# nvmlSystemGetConfComputeCapabilities().cpuCaps -> the CPU's trusted execution environment.
CPU_TEE_NAMES = {0: "none", 1: "AMD SEV", 2: "Intel TDX", 3: "AMD SEV-SNP", 4: "AMD SNP vTOM"}

Runner = Callable[[Sequence[str], float], str]


def _describe(exc: BaseException) -> str:
    """``NVMLError_NotSupported: Not Supported``: the error's class and message, for the record."""
    return f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------------------- NVML

@contextlib.contextmanager
def nvml_session(nvml: Any = None) -> Iterator[tuple[Any, str | None]]:
    """Import (unless given) and initialise NVML; yield ``(module, None)`` or ``(None, error)``."""
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as exc:
            yield None, _describe(exc)
            return
    try:
        nvml.nvmlInit()
    except NVML_FAILURES as exc:  # LibraryNotFound, DriverNotLoaded, an old binding, ...
        yield None, _describe(exc)
        return
    try:
        yield nvml, None
    finally:
        with contextlib.suppress(*NVML_FAILURES):
            nvml.nvmlShutdown()


def _nvml_call(errors: dict[str, str], key: str, fn_name: str, nvml: Any, *args: Any) -> Any:
    """Call ``nvml.<fn_name>(*args)``; on any failure record it under ``key`` and return None."""
    try:
        return getattr(nvml, fn_name)(*args)
    except NVML_FAILURES as exc:
        errors[key] = _describe(exc)
        return None


def _text(value: Any) -> str | None:
    """NVML strings arrive as ``str`` from current bindings and ``bytes`` from old ones."""
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cuda_version_text(version: int | None) -> str | None:
    """NVML's CUDA driver version ``12040`` -> ``"12.4"``."""
    if not isinstance(version, int):
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


# --------------------------------------------------------------------------- CC detection

def run_nvidia_smi(args: Sequence[str], timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> str:
    """Run ``nvidia-smi ARGS`` and return its stdout; raises if it is missing, fails or hangs."""
    completed = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True,
                               timeout=timeout_s, check=True)
    return completed.stdout


_CC_STATUS = re.compile(r"\b(?:CC|Confidential Compute)\s+status\s*:\s*(ON|OFF)\b", re.IGNORECASE)
_READY_STATE = re.compile(r"ready\s+state\s*:\s*(\S+)", re.IGNORECASE)


def parse_cc_status(text: str) -> str | None:
    """``nvidia-smi conf-compute -f`` output (``CC status: ON``) -> ``"on"`` / ``"off"`` / None."""
    match = _CC_STATUS.search(text)
    return match.group(1).lower() if match else None


def parse_ready_state(text: str) -> str | None:
    """``nvidia-smi conf-compute -grs`` output -> the word after ``ready state:``, lower case."""
    match = _READY_STATE.search(text)
    return match.group(1).lower() if match else None


def _empty_cc() -> dict[str, Any]:
    return {
        "cc_mode": "unknown",
        "cc_source": None,
        "cc_environment": None,         # NVML: 0 unavailable, 1 simulation, 2 production
        "cc_feature": None,             # NVML ccFeature: 1 = CC on, 0 = off
        "cc_devtools_mode": None,       # NVML devToolsMode: 1 = on
        "cc_gpus_ready_state": None,    # NVML: 1 = accepting client requests
        "cc_cpu_caps": None,            # NVML cpuCaps, named in cpu_tee
        "cpu_tee": None,
        "cc_gpus_caps": None,           # NVML gpusCaps: 1 = CC capable
        "cc_protected_mem_kib": None,
        "cc_unprotected_mem_kib": None,
        "nvml_error": None,
        "nvml_field_errors": {},        # NVML calls that failed after the CC state was read
        "nvidia_smi_cc_status": None,   # the raw line nvidia-smi printed
        "nvidia_smi_ready_state": None,
        "nvidia_smi_error": None,
    }


def _cc_from_nvml(nvml: Any, gpu_index: int, result: dict[str, Any]) -> None:
    """Fill ``result`` from an initialised NVML; sets cc_mode only when ccFeature is 0 or 1."""
    field_errors: dict[str, str] = {}
    try:
        state = nvml.nvmlSystemGetConfComputeState()
    except NVML_FAILURES as exc:
        result["nvml_error"] = _describe(exc)
        return
    result["cc_environment"] = getattr(state, "environment", None)
    result["cc_feature"] = getattr(state, "ccFeature", None)
    result["cc_devtools_mode"] = getattr(state, "devToolsMode", None)
    if result["cc_feature"] in (0, 1):
        result["cc_mode"] = "on" if result["cc_feature"] == 1 else "off"
        result["cc_source"] = "nvml"
    else:
        result["nvml_error"] = f"unexpected ccFeature {result['cc_feature']!r}"

    result["cc_gpus_ready_state"] = _nvml_call(
        field_errors, "gpus_ready_state", "nvmlSystemGetConfComputeGpusReadyState", nvml)
    caps = _nvml_call(field_errors, "capabilities", "nvmlSystemGetConfComputeCapabilities", nvml)
    if caps is not None:
        result["cc_cpu_caps"] = getattr(caps, "cpuCaps", None)
        result["cc_gpus_caps"] = getattr(caps, "gpusCaps", None)
        cpu_caps = result["cc_cpu_caps"]
        result["cpu_tee"] = CPU_TEE_NAMES.get(cpu_caps, f"unknown ({cpu_caps})")
    handle = _nvml_call(field_errors, "handle", "nvmlDeviceGetHandleByIndex", nvml, gpu_index)
    if handle is not None:
        mem = _nvml_call(field_errors, "mem_size_info", "nvmlDeviceGetConfComputeMemSizeInfo",
                         nvml, handle)
        if mem is not None:
            result["cc_protected_mem_kib"] = getattr(mem, "protectedMemSizeKib", None)
            result["cc_unprotected_mem_kib"] = getattr(mem, "unprotectedMemSizeKib", None)
    result["nvml_field_errors"] = field_errors


def _cc_from_nvidia_smi(run: Runner, result: dict[str, Any]) -> None:
    """Fill ``result`` from ``nvidia-smi conf-compute -f`` and ``-grs``."""
    try:
        output = run(["conf-compute", "-f"], NVIDIA_SMI_TIMEOUT_S)
    except NVIDIA_SMI_FAILURES as exc:
        result["nvidia_smi_error"] = _describe(exc)
        return
    status = parse_cc_status(output)
    if status is None:
        result["nvidia_smi_error"] = f"no 'CC status: ON|OFF' in output: {output.strip()[:200]!r}"
        return
    result["nvidia_smi_cc_status"] = _CC_STATUS.search(output).group(0)  # type: ignore[union-attr]
    result["cc_mode"] = status
    result["cc_source"] = "nvidia-smi"
    with contextlib.suppress(*NVIDIA_SMI_FAILURES):  # the mode is decided; this is a detail
        result["nvidia_smi_ready_state"] = parse_ready_state(
            run(["conf-compute", "-grs"], NVIDIA_SMI_TIMEOUT_S))


def detect_cc(nvml: Any = None, run: Runner | None = None, gpu_index: int = 0) -> dict[str, Any]:
    """Whether confidential computing is on: NVML first, then ``nvidia-smi``, else ``unknown``.

    Returns ``cc_mode`` (``on`` / ``off`` / ``unknown``), ``cc_source`` (``nvml``,
    ``nvidia-smi`` or None), the raw NVML fields, the CPU TEE name and the errors met on the way.
    """
    result = _empty_cc()
    with nvml_session(nvml) as (session, error):
        if session is None:
            result["nvml_error"] = error
        else:
            _cc_from_nvml(session, gpu_index, result)
    if result["cc_source"] is None:
        _cc_from_nvidia_smi(run or run_nvidia_smi, result)
    return result


# --------------------------------------------------------------------- environment snapshot

def _cpu_model() -> str | None:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_info_nvml(nvml: Any, gpu_index: int) -> dict[str, Any]:
    """GPU name, driver, CUDA driver version and memory from an initialised NVML."""
    errors: dict[str, str] = {}
    info: dict[str, Any] = {
        "gpu_count": _nvml_call(errors, "count", "nvmlDeviceGetCount", nvml),
        "driver_version": _text(_nvml_call(errors, "driver", "nvmlSystemGetDriverVersion", nvml)),
        "cuda_driver_version": _cuda_version_text(
            _nvml_call(errors, "cuda", "nvmlSystemGetCudaDriverVersion", nvml)),
    }
    handle = _nvml_call(errors, "handle", "nvmlDeviceGetHandleByIndex", nvml, gpu_index)
    if handle is not None:
        info["gpu_name"] = _text(_nvml_call(errors, "name", "nvmlDeviceGetName", nvml, handle))
        memory = _nvml_call(errors, "memory", "nvmlDeviceGetMemoryInfo", nvml, handle)
        if memory is not None:
            info["gpu_mem_total_gib"] = round(memory.total / GIB, 3)
    return info


def _gpu_info_torch(gpu_index: int) -> dict[str, Any]:
    """GPU name and memory from torch when NVML gave none; CUDA build and availability always."""
    info: dict[str, Any] = {}
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["cuda_version"] = torch.version.cuda
    with contextlib.suppress(RuntimeError, AssertionError, OSError):
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            props = torch.cuda.get_device_properties(gpu_index)
            info["gpu_name"] = props.name
            info["gpu_mem_total_gib"] = round(props.total_memory / GIB, 3)
    return info


def get_sys_info(nvml: Any = None, run: Runner | None = None,
                 gpu_index: int = 0) -> dict[str, Any]:
    """A JSON-serialisable snapshot of host, software, GPU and CC mode; missing pieces are None."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "ram_total_gib": round(psutil.virtual_memory().total / GIB, 3),
        "python": platform.python_version(),
        "torch": _package_version("torch"),
        "transformers": _package_version("transformers"),
        "cuda_version": None,
        "cuda_available": None,
        "gpu_count": None,
        "gpu_name": None,
        "gpu_mem_total_gib": None,
        "driver_version": None,
        "cuda_driver_version": None,
        "nvml_version": _package_version("nvidia-ml-py"),
    }
    with nvml_session(nvml) as (session, _error):
        if session is not None:
            info.update({k: v for k, v in _gpu_info_nvml(session, gpu_index).items()
                         if v is not None})
    torch_info = _gpu_info_torch(gpu_index)
    for key, value in torch_info.items():
        if info.get(key) is None:
            info[key] = value
    info.update(detect_cc(nvml=nvml, run=run, gpu_index=gpu_index))
    return info


def environment_block(nvml: Any = None, run: Runner | None = None,
                      gpu_index: int = 0) -> dict[str, Any]:
    """The ``environment`` entry of run.json: the system snapshot with its CC fields."""
    return get_sys_info(nvml=nvml, run=run, gpu_index=gpu_index)


def format_environment(env: dict[str, Any]) -> str:
    """A few human lines summarising an environment block, for a script's start-up banner."""
    get = env.get
    lines = [
        f"host {get('hostname')}  {get('os')}",
        f"cpu {get('cpu_model')} x{get('cpu_count_logical')}  ram {get('ram_total_gib')} GiB",
        f"python {get('python')}  torch {get('torch')}  transformers {get('transformers')}",
        f"cuda {get('cuda_version')} (available: {get('cuda_available')})  gpu {get('gpu_name')}  "
        + f"{get('gpu_mem_total_gib')} GiB  driver {get('driver_version')}",
        f"cc_mode {get('cc_mode')} (source: {get('cc_source')})  cpu_tee {get('cpu_tee')}",
    ]
    for key in ("nvml_error", "nvidia_smi_error"):
        if env.get(key):
            lines.append(f"{key}: {env[key]}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- sampler

def _format_cell(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(round(value, 4))
    return str(value)


class Monitor:
    """Samples CPU, RAM and one GPU on a fixed period into ``monitor.csv`` and into memory.

    ``t_s`` counts from ``start_monotonic`` (the run's start on ``clock``; default: when the
    monitor opens), so the server can share its run clock. Ticks fall at ``start + k * period_s``;
    a tick missed because sampling ran late is skipped, not bunched. ``out_path=None`` keeps the
    samples in memory only. Use ``with Monitor(...)`` or ``start()`` / ``stop()``;
    ``sample_once()`` takes one sample now, with or without the thread.
    """

    def __init__(self, out_path: str | Path | None, period_s: float = 0.5,
                 gpu_index: int = 0, start_monotonic: float | None = None, nvml: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.out_path = Path(out_path) if out_path is not None else None
        self.period_s = float(period_s)
        self.gpu_index = gpu_index
        self.start_monotonic = start_monotonic
        self.nvml_error: str | None = None
        self._nvml_arg = nvml
        self._clock = clock
        self._wall_clock = wall_clock
        self._rows: list[tuple[float | int | None, ...]] = []
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: TextIO | None = None
        self._writer: Any = None
        self._resources = contextlib.ExitStack()  # the NVML session, released by stop()
        self._nvml: Any = None
        self._handle: Any = None
        self._opened = False
        self._closed = False

    # ---- lifecycle

    def _open(self) -> None:
        """Initialise NVML, prime psutil's CPU counter and write the CSV header (once)."""
        if self._closed:
            raise RuntimeError("the monitor has been stopped")
        if self._opened:
            return
        self._opened = True
        if self.start_monotonic is None:
            self.start_monotonic = self._clock()
        psutil.cpu_percent(interval=None)  # the first call only sets the reference point
        self._nvml, self.nvml_error = self._resources.enter_context(
            nvml_session(self._nvml_arg))
        if self._nvml is not None:
            try:
                self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            except NVML_FAILURES as exc:
                self.nvml_error = _describe(exc)
        if self.out_path is not None:
            self.out_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.out_path.open("w", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(MONITOR_COLUMNS)
            self._file.flush()

    def start(self) -> Self:
        """Open the CSV and NVML and start the sampling thread."""
        if self._thread is not None:
            return self
        self._open()
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, close the CSV and release NVML; calling it again does nothing."""
        self._stop_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = self._writer = None
            self._resources.close()
            self._nvml = self._handle = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self) -> None:
        """Sample at ``start + k * period_s``; after a late sample, skip to the next future tick."""
        start = self.start_monotonic
        assert start is not None
        tick = max(0, math.floor((self._clock() - start) / self.period_s))  # now, if on time
        while not self._stop_event.is_set():
            wait_s = start + tick * self.period_s - self._clock()
            if wait_s > 0 and self._stop_event.wait(wait_s):
                break
            try:
                self.sample_once()
            except RuntimeError:  # stopped between the wait and the sample
                break
            tick = max(tick + 1, math.floor((self._clock() - start) / self.period_s) + 1)

    # ---- sampling

    def _gpu_readings(self) -> tuple[float | int | None, ...]:
        """The six GPU columns; each reading that fails (or has no GPU) is None on its own."""
        nvml, handle = self._nvml, self._handle
        if nvml is None or handle is None:
            return (None,) * 6
        errors: dict[str, str] = {}
        util = _nvml_call(errors, "util", "nvmlDeviceGetUtilizationRates", nvml, handle)
        memory = _nvml_call(errors, "memory", "nvmlDeviceGetMemoryInfo", nvml, handle)
        power_mw = _nvml_call(errors, "power", "nvmlDeviceGetPowerUsage", nvml, handle)
        sm_clock = _nvml_call(errors, "clock", "nvmlDeviceGetClockInfo", nvml, handle,
                              getattr(nvml, "NVML_CLOCK_SM", 1))
        temperature = _nvml_call(errors, "temperature", "nvmlDeviceGetTemperature", nvml,
                                 handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        return (
            getattr(util, "gpu", None),
            getattr(util, "memory", None),
            memory.used / GIB if memory is not None else None,
            power_mw / 1000.0 if power_mw is not None else None,
            sm_clock,
            temperature,
        )

    def sample_once(self) -> dict[str, float | int | None]:
        """Take one sample now, append it to the CSV (flushed) and to memory, and return it."""
        with self._lock:
            self._open()
            t_s = self._clock() - self.start_monotonic  # type: ignore[operator]
            epoch_s = self._wall_clock()
            cpu_pct = psutil.cpu_percent(interval=None)
            ram_used_gib = psutil.virtual_memory().used / GIB
            row = (t_s, epoch_s, cpu_pct, ram_used_gib, *self._gpu_readings())
            self._rows.append(row)
            if self._writer is not None:
                self._writer.writerow([_format_cell(v) for v in row])
                self._file.flush()  # type: ignore[union-attr]
        return dict(zip(MONITOR_COLUMNS, row, strict=True))

    # ---- reading back

    @property
    def sample_count(self) -> int:
        """How many samples have been taken."""
        return len(self._rows)

    def samples(self, since_t_s: float | None = None,
                until_t_s: float | None = None) -> list[dict[str, float | int | None]]:
        """The samples with ``since_t_s <= t_s <= until_t_s`` (open bounds when None)."""
        with self._lock:
            rows = list(self._rows)
        return [dict(zip(MONITOR_COLUMNS, row, strict=True)) for row in rows
                if (since_t_s is None or row[0] >= since_t_s)
                and (until_t_s is None or row[0] <= until_t_s)]

    def means(self, since_t_s: float | None = None,
              until_t_s: float | None = None) -> dict[str, float | None]:
        """Mean of each measured column over the window; None where no sample had a value.

        The window is inclusive and in the monitor's ``t_s``; a window shorter than the period
        may hold no sample (call ``sample_once()`` at its ends to be sure of two).
        """
        window = self.samples(since_t_s, until_t_s)
        result: dict[str, float | None] = {}
        for column in READING_COLUMNS:
            values = [row[column] for row in window if row[column] is not None]
            result[column] = sum(values) / len(values) if values else None  # type: ignore
        return result

