"""The traffic window of a run (SPEC section 6): the one definition every side uses.

The window runs from the run's start (0 s) to the end of the traffic: ``duration_s`` when the
run had a finite, positive duration; otherwise (a whole trace replayed, a run that a standard
load generator drove without saying how long) until the last request arrived. Rates, the GPU
busy and swap fractions and the drain are measured against it. The server, the simulator and
client-side runs compute it here; results processing takes it from run.json and, for a
run.json that lacks it, computes it here too.
"""

from __future__ import annotations

import math
from typing import Any


def finite_duration_s(duration_s: Any) -> float | None:
    """``duration_s`` as a float when it is a finite positive number, else None."""
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)):
        return None
    return float(duration_s) if math.isfinite(duration_s) and duration_s > 0 else None


def traffic_window_s(duration_s: Any, last_arrival_s: float | None) -> float:
    """The end of the traffic window: the run's finite duration, else its last arrival (NaN
    when neither is known: no duration and no request)."""
    duration = finite_duration_s(duration_s)
    if duration is not None:
        return duration
    if last_arrival_s is None or not math.isfinite(last_arrival_s):
        return math.nan
    return float(last_arrival_s)
