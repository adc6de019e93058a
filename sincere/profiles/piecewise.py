"""The one interpolation of a profiled curve: P(b) and the length term's alpha(b) alike."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def piecewise_linear(sizes: Sequence[int], values: Sequence[float], batch_size: int) -> float:
    """The value at ``batch_size`` of a curve known at ``sizes`` (ascending): linear between
    them, the smallest size's value below it, the last segment's slope above the largest (a
    curve of one size: in proportion to the size)."""
    if batch_size <= sizes[0]:
        return values[0]
    i = bisect.bisect_left(sizes, batch_size)
    if i == len(sizes):
        if len(sizes) == 1:
            return values[0] * batch_size / sizes[0]
        i = len(sizes) - 1
    b0, b1 = sizes[i - 1], sizes[i]
    v0, v1 = values[i - 1], values[i]
    return v0 + (v1 - v0) * (batch_size - b0) / (b1 - b0)
