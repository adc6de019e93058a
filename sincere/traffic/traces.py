"""Request-arrival traces read for replay: Azure LLM inference trace CSV and Mooncake JSONL.

Only timestamps and prompt lengths are read; a malformed line is an error naming its line.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

_AZURE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")


def _azure_time_ns(text: str) -> int:
    """'2023-11-16 18:15:46.6805900' -> integer ns (any 1-9 fractional digits, exact)."""
    match = _AZURE_TIME.match(text.strip())
    if not match:
        raise ValueError(f"timestamp {text!r} is not like 2023-11-16 18:15:46.6805900")
    day, hours, minutes, seconds, fraction = match.groups()
    whole_s = (dt.date.fromisoformat(day).toordinal() * 86400 + int(hours) * 3600
               + int(minutes) * 60 + int(seconds))
    return whole_s * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def _optional_tokens(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"token count {value!r} is not an integer")
    return int(value)


def _read_azure_csv(path: Path) -> tuple[list[int], list[int | None], int]:
    """Rows of an Azure LLM inference trace: (timestamps in ns, ContextTokens, 10**9 ns/s)."""
    stamps_ns: list[int] = []
    tokens: list[int | None] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        if "timestamp" not in header:
            raise ValueError(f"{path}, line 1: no TIMESTAMP column in header {header}")
        time_col = header.index("timestamp")
        token_col = header.index("contexttokens") if "contexttokens" in header else None
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            try:
                if len(row) != len(header):
                    raise ValueError(f"{len(row)} fields, header has {len(header)}")
                stamps_ns.append(_azure_time_ns(row[time_col]))
                tokens.append(None if token_col is None else _optional_tokens(row[token_col]))
            except ValueError as error:
                raise ValueError(f"{path}, line {reader.line_num}: {error}") from None
    return stamps_ns, tokens, 1_000_000_000


def _read_mooncake_jsonl(path: Path) -> tuple[list[float], list[int | None], int]:
    """Lines of a Mooncake trace: (timestamps in ms, input_length, 1000 ms/s)."""
    stamps_ms: list[float] = []
    tokens: list[int | None] = []
    with path.open(encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                stamp = record.get("timestamp")
                if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) \
                        or not math.isfinite(stamp):
                    raise ValueError(f"timestamp {stamp!r} is not a number of ms")
                stamps_ms.append(stamp)
                tokens.append(_optional_tokens(record.get("input_length")))
            except ValueError as error:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{path}, line {line_number}: {error}") from None
    return stamps_ms, tokens, 1000


def read_trace(path: Path) -> tuple[np.ndarray, list[int | None]]:
    """Request times (s, first = 0, ascending) and prompt token counts of a trace file.

    Azure LLM inference trace CSV (TIMESTAMP, ContextTokens, ...) or Mooncake JSONL (timestamp
    in ms, input_length), told apart by the first character ('{' for JSONL). Timestamps are
    subtracted as exact integers before converting to seconds; requests sharing a timestamp are
    all kept in file order; an unsorted file is sorted stably.
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig") as handle:
        head = handle.read(4096).lstrip()
    reader = _read_mooncake_jsonl if head.startswith("{") else _read_azure_csv
    stamps, tokens, units_per_s = reader(path)
    if not stamps:
        raise ValueError(f"{path}: the trace has no requests")
    order = sorted(range(len(stamps)), key=stamps.__getitem__)  # stable
    first = stamps[order[0]]
    times_s = np.array([(stamps[i] - first) / units_per_s for i in order], dtype=np.float64)
    return times_s, [tokens[i] for i in order]
