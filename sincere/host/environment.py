"""The machine a run measures: its environment snapshot and confidential-computing (CC) mode.

``environment_block`` is run.json's ``environment``: host, software, GPU and the CC mode that
NVML (else ``nvidia-smi``) reports. NVML is reached only through a module object (``pynvml`` by
default) and ``nvidia-smi`` only through a runner function, both passed in, so tests can replace
their answers at the binding's boundary. Nothing here ever raises because a GPU, NVML or
``nvidia-smi`` is missing: the missing readings are empty (``None``) and the reason is recorded.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import platform
import re
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

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

# nvmlSystemGetConfComputeCapabilities().cpuCaps -> the CPU's trusted execution environment.
CPU_TEE_NAMES = {0: "none", 1: "AMD SEV", 2: "Intel TDX", 3: "AMD SEV-SNP", 4: "AMD SNP vTOM"}

Runner = Callable[[Sequence[str], float], str]


def describe_failure(exc: BaseException) -> str:
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
            yield None, describe_failure(exc)
            return
    try:
        nvml.nvmlInit()
    except NVML_FAILURES as exc:  # LibraryNotFound, DriverNotLoaded, an old binding, ...
        yield None, describe_failure(exc)
        return
    try:
        yield nvml, None
    finally:
        with contextlib.suppress(*NVML_FAILURES):
            nvml.nvmlShutdown()


def nvml_call(errors: dict[str, str], key: str, fn_name: str, nvml: Any, *args: Any) -> Any:
    """Call ``nvml.<fn_name>(*args)``; on any failure record it under ``key`` and return None."""
    try:
        return getattr(nvml, fn_name)(*args)
    except NVML_FAILURES as exc:
        errors[key] = describe_failure(exc)
        return None


def nvml_text(value: Any) -> str | None:
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
        result["nvml_error"] = describe_failure(exc)
        return
    result["cc_environment"] = getattr(state, "environment", None)
    result["cc_feature"] = getattr(state, "ccFeature", None)
    result["cc_devtools_mode"] = getattr(state, "devToolsMode", None)
    if result["cc_feature"] in (0, 1):
        result["cc_mode"] = "on" if result["cc_feature"] == 1 else "off"
        result["cc_source"] = "nvml"
    else:
        result["nvml_error"] = f"unexpected ccFeature {result['cc_feature']!r}"

    result["cc_gpus_ready_state"] = nvml_call(
        field_errors, "gpus_ready_state", "nvmlSystemGetConfComputeGpusReadyState", nvml)
    caps = nvml_call(field_errors, "capabilities", "nvmlSystemGetConfComputeCapabilities", nvml)
    if caps is not None:
        result["cc_cpu_caps"] = getattr(caps, "cpuCaps", None)
        result["cc_gpus_caps"] = getattr(caps, "gpusCaps", None)
        cpu_caps = result["cc_cpu_caps"]
        result["cpu_tee"] = CPU_TEE_NAMES.get(cpu_caps, f"unknown ({cpu_caps})")
    handle = nvml_call(field_errors, "handle", "nvmlDeviceGetHandleByIndex", nvml, gpu_index)
    if handle is not None:
        mem = nvml_call(field_errors, "mem_size_info", "nvmlDeviceGetConfComputeMemSizeInfo",
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
        result["nvidia_smi_error"] = describe_failure(exc)
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
        "gpu_count": nvml_call(errors, "count", "nvmlDeviceGetCount", nvml),
        "driver_version": nvml_text(
            nvml_call(errors, "driver", "nvmlSystemGetDriverVersion", nvml)),
        "cuda_driver_version": _cuda_version_text(
            nvml_call(errors, "cuda", "nvmlSystemGetCudaDriverVersion", nvml)),
    }
    handle = nvml_call(errors, "handle", "nvmlDeviceGetHandleByIndex", nvml, gpu_index)
    if handle is not None:
        info["gpu_name"] = nvml_text(nvml_call(errors, "name", "nvmlDeviceGetName", nvml, handle))
        memory = nvml_call(errors, "memory", "nvmlDeviceGetMemoryInfo", nvml, handle)
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
