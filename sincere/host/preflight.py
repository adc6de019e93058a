"""Checks of the machine before a long job: the Hub token, free disk, a visible GPU and its CC
mode. Each takes a fraction of a second and returns a ``Check`` whose message says what was
found and, when it failed, what to do.

What a job needs (which models it must download, how much a grid writes, whether its settings
need a GPU) is the caller's to say: ``sincere.grid.study`` asks these for run_pipeline.sh. No
torch here: a check must fail in seconds, not after the import of a deep-learning framework.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere.host.environment import Runner, detect_cc, nvml_call, nvml_session, nvml_text
from sincere.host.monitor import visible_gpu


@dataclass(frozen=True)
class Check:
    """One check before a job: what it is about, whether it passed, and one line saying what
    was found (and, when it failed, the fix)."""

    name: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.message}"


def hub_token(models: Sequence[str], environ: Mapping[str, str] | None = None,
              stored_token: Callable[[], str | None] | None = None) -> Check:
    """The Hugging Face token, when ``models`` (aliases) are to come from the Hub: HF_TOKEN, or
    a token saved by ``hf auth login``. Gemma and Llama are gated: without one, the download
    fails after the first model, minutes in. HF_HUB_OFFLINE refuses every download."""
    environ = os.environ if environ is None else environ
    if not models:
        return Check("hub token", True, "no model to download from the Hub")
    wanted = ", ".join(models)
    if environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return Check("hub token", False,
                     f"HF_HUB_OFFLINE is set, so {wanted} cannot be downloaded: unset it "
                     "(or put the model folders in MODELS_DIR, or use MODEL_KIND=random)")
    if environ.get("HF_TOKEN", "").strip():
        return Check("hub token", True, f"HF_TOKEN is set, for {wanted}")
    if stored_token is None:
        from huggingface_hub import get_token as stored_token
    if stored_token():
        return Check("hub token", True, f"a saved Hugging Face login, for {wanted}")
    return Check("hub token", False,
                 f"HF_TOKEN is not set, and {wanted} must come from the Hub (gemma and llama "
                 "are gated): accept their licences on huggingface.co, then export "
                 "HF_TOKEN=<your token> (or use MODEL_KIND=random to build them offline)")


@dataclass(frozen=True)
class DiskNeed:
    """Gigabytes a job will write below ``path``, what they are, and the setting that puts
    them elsewhere (``MODELS_DIR``)."""

    path: Path
    gb: float
    what: str
    setting: str


def _existing(path: Path) -> Path:
    """``path``, or the nearest folder above it that exists (where it will be made)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_disk(needs: Sequence[DiskNeed],
              usage: Callable[[Path], Any] = shutil.disk_usage) -> list[Check]:
    """One check per file system that ``needs`` write to: its free space against the sum of
    what goes there."""
    by_device: dict[int, list[DiskNeed]] = {}
    for need in needs:
        by_device.setdefault(os.stat(_existing(need.path)).st_dev, []).append(need)
    checks = []
    for group in by_device.values():
        where = _existing(group[0].path)
        free_gb = usage(where).free / 1e9
        need_gb = sum(n.gb for n in group)
        parts = ", ".join(f"{n.what} {n.gb:.1f} GB" for n in group)
        found = f"{free_gb:.1f} GB free on {where}, {need_gb:.1f} GB needed ({parts})"
        if free_gb >= need_gb:
            checks.append(Check("disk", True, found))
        else:
            checks.append(Check("disk", False,
                                f"{found}: free {need_gb - free_gb:.1f} GB there, or point "
                                f"{' or '.join(dict.fromkeys(n.setting for n in group))} "
                                "at a disk with room"))
    return checks


@dataclass(frozen=True)
class Gpu:
    """What this machine shows of its GPU: how many are visible to this process, the first
    one's name, and the CC mode (``sincere.host.environment.detect_cc``'s fields)."""

    count: int
    name: str | None
    cc: dict[str, Any]
    error: str | None = None  # why none could be counted

    @property
    def cc_mode(self) -> str:
        return str(self.cc.get("cc_mode", "unknown"))

    def describe(self) -> str:
        """``1 GPU visible (NVIDIA H100 80GB HBM3), CC mode on (nvml)``."""
        if not self.count:
            why = f" ({self.error})" if self.error else ""
            gpus = f"no GPU visible{why}"
        else:
            gpus = f"{self.count} GPU{'s' * (self.count != 1)} visible ({self.name})"
        return f"{gpus}, CC mode {self.cc_mode} ({self.cc.get('cc_source') or 'not detected'})"


def find_gpu(nvml: Any = None, run: Runner | None = None,
             environ: Mapping[str, str] | None = None) -> Gpu:
    """The GPUs NVML counts, less those CUDA_VISIBLE_DEVICES hides, and the CC mode."""
    errors: dict[str, str] = {}
    count, name, error = 0, None, None
    hidden = visible_gpu(environ) is None
    with nvml_session(nvml) as (session, session_error):
        if session is None:
            error = f"NVML: {session_error}"
        elif hidden:
            error = "CUDA_VISIBLE_DEVICES hides every GPU"
        else:
            count = int(nvml_call(errors, "count", "nvmlDeviceGetCount", session) or 0)
            handle = nvml_call(errors, "handle", "nvmlDeviceGetHandleByIndex", session, 0) \
                if count else None
            if handle is not None:
                name = nvml_text(nvml_call(errors, "name", "nvmlDeviceGetName", session, handle))
            error = errors.get("count")
    return Gpu(count, name, detect_cc(nvml=nvml, run=run), error)


def gpu_check(gpu: Gpu, needed_by: str, without: str) -> Check:
    """A GPU must be visible when ``needed_by`` (the settings that need one) is not empty;
    ``without`` says how to go on without one."""
    found = gpu.describe()
    if gpu.count or not needed_by:
        return Check("gpu", True, found)
    return Check("gpu", False, f"{found}, but {needed_by} needs one: run this on the GPU "
                               f"machine (check nvidia-smi there); {without}")
