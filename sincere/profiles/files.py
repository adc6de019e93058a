"""Profile files: their names (device slug, CC label, stamp), hardware names and the console
table (SPEC section 3); rows are written by ``sincere.files.CsvWriter``.
``sincere.profiles.profiling`` measures what goes in them; ``sincere.profiles.profile_set`` reads
them back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sincere.files import csv_cell

STAMP_FORMAT = "%Y%m%d-%H%M%S"

_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro"}


# --- names ----------------------------------------------------------------------------------

def device_slug(gpu_name: str | None) -> str:
    """A short file-name slug of a GPU's name (``NVIDIA H100 80GB HBM3`` -> ``h100``); ``cpu``
    when there is none."""
    if not gpu_name:
        return "cpu"
    words = [w for w in re.split(r"[^a-z0-9]+", gpu_name.lower()) if w and w not in _VENDOR_WORDS]
    if not words:
        return "gpu"
    if words[0].isalpha() and len(words) > 1:  # "RTX 4090" -> rtx4090, "RTX A6000" -> rtxa6000
        return words[0] + words[1]
    return words[0]


def cc_label(cc_mode: str) -> str:
    """``cc`` when CC is on; ``noncc`` for off and for unknown (the column keeps the truth)."""
    return "cc" if cc_mode == "on" else "noncc"


def timestamp(now: datetime | None = None) -> str:
    """The stamp that ends a profile's file name; newer stamps sort later."""
    return (now or datetime.now()).strftime(STAMP_FORMAT)


def profile_path(profiles_dir: Path, kind: str, device: str, cc_mode: str, stamp: str) -> Path:
    """``<dir>/<kind>_<device>_<cc|noncc>_<stamp>.csv``; kind is model_loading_times,
    batch_profiling or best_batch."""
    return Path(profiles_dir) / f"{kind}_{device}_{cc_label(cc_mode)}_{stamp}.csv"


def hardware_name(environment: Mapping[str, Any]) -> str:
    """The GPU's name, else the CPU's, from an environment block (sincere.host.environment)."""
    return str(environment.get("gpu_name") or environment.get("cpu_model") or "unknown device")


def device_name(environment: Mapping[str, Any], device: str, decode: str = "eager") -> str:
    """The profile's device slug: ``cpu`` for a CPU engine, else the GPU's slug; with
    ``-static`` added for the static-cache compiled engine, whose batch times differ."""
    slug = "cpu" if device == "cpu" else device_slug(environment.get("gpu_name") or "gpu")
    return slug if decode == "eager" else f"{slug}-{decode}"


def measured_source(hardware: str, day: datetime | None = None) -> str:
    """The ``source`` column of a measured profile row."""
    return f"measured: {hardware}, {(day or datetime.now()).strftime('%Y-%m-%d')}"


# --- CSV ------------------------------------------------------------------------------------

def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table, for the console."""
    cells = [[str(csv_cell(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for fewer than two values)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
