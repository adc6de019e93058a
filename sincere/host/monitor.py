"""CPU and GPU sampling into ``monitor.csv`` on a fixed period, for the whole of a run.

NVML is reached only through a module object (``pynvml`` by default), passed in, so tests can
replace its answers; a missing GPU or NVML leaves the GPU columns empty, never raises. The
machine's environment and CC mode are in sincere/host/environment.py.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import psutil

from sincere.files import CsvWriter
from sincere.host.environment import (
    GIB,
    NVML_FAILURES,
    describe_failure,
    nvml_call,
    nvml_session,
)
from sincere.schemas import MONITOR_COLUMNS

READING_COLUMNS = MONITOR_COLUMNS[2:]  # the measured columns (all but t_s, epoch_s)


def visible_gpu(environ: Mapping[str, str] | None = None) -> int | str | None:
    """The GPU this process computes on, as NVML names it: the first entry of
    CUDA_VISIBLE_DEVICES (an index, or a ``GPU-``/``MIG-`` UUID), 0 when the variable is unset,
    None when it hides every GPU. NVML ignores the variable, so without this a run that Ray
    gave GPU 3 would sample GPU 0. (An index is taken in NVML's order, which is CUDA's on a
    node of identical GPUs.)"""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" not in environ:
        return 0
    first = environ["CUDA_VISIBLE_DEVICES"].split(",")[0].strip()
    if first.isdigit():
        return int(first)
    return first if first.startswith(("GPU-", "MIG-")) else None


class Monitor:
    """Samples CPU, RAM and one GPU on a fixed period into ``monitor.csv`` and into memory.

    ``t_s`` counts from ``start_monotonic`` (the run's start on ``clock``; default: when the
    monitor opens), so the server can share its run clock. Ticks fall at ``start + k * period_s``;
    a tick missed because sampling ran late is skipped, not bunched. ``out_path=None`` keeps the
    samples in memory only. Use ``with Monitor(...)`` or ``start()`` / ``stop()``;
    ``sample_once()`` takes one sample now, with or without the thread. ``gpu_index``: the GPU's
    NVML index, or its UUID, or None for no GPU (see ``visible_gpu``). ``wait(seconds)`` is how
    the thread waits for its next tick: True when the monitor was stopped meanwhile (by default
    it waits on ``stop()``); a test passes one that advances a fake ``clock`` instead.
    """

    def __init__(self, out_path: str | Path | None, period_s: float = 0.5,
                 gpu_index: int | str | None = 0, start_monotonic: float | None = None,
                 nvml: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 wait: Callable[[float], bool] | None = None) -> None:
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
        self._wait = wait or self._stop_event.wait
        self._thread: threading.Thread | None = None
        self._writer: CsvWriter | None = None
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
        if self._nvml is not None and self.gpu_index is not None:
            by_uuid = isinstance(self.gpu_index, str)
            try:
                self._handle = getattr(self._nvml, "nvmlDeviceGetHandleByUUID" if by_uuid
                                       else "nvmlDeviceGetHandleByIndex")(self.gpu_index)
            except NVML_FAILURES as exc:
                self.nvml_error = describe_failure(exc)
        if self.out_path is not None:
            self._writer = CsvWriter(self.out_path, MONITOR_COLUMNS)

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
            if self._writer is not None:
                self._writer.close()
                self._writer = None
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
            if wait_s > 0 and self._wait(wait_s):
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
        util = nvml_call(errors, "util", "nvmlDeviceGetUtilizationRates", nvml, handle)
        memory = nvml_call(errors, "memory", "nvmlDeviceGetMemoryInfo", nvml, handle)
        power_mw = nvml_call(errors, "power", "nvmlDeviceGetPowerUsage", nvml, handle)
        sm_clock = nvml_call(errors, "clock", "nvmlDeviceGetClockInfo", nvml, handle,
                              getattr(nvml, "NVML_CLOCK_SM", 1))
        temperature = nvml_call(errors, "temperature", "nvmlDeviceGetTemperature", nvml,
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
            sample = dict(zip(MONITOR_COLUMNS, row, strict=True))
            if self._writer is not None:
                self._writer.write(sample)
        return sample

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

