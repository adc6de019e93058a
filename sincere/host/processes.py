"""Child processes that never outlive their parent (Linux parent-death signal), and the CPU
cores a server and its engine's process split between them."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterable

PR_SET_PDEATHSIG = 1  # prctl option: the signal a child gets when its parent dies

try:  # looked up here, in the parent: a child between fork and exec should do little
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def die_with_parent() -> None:
    """A ``preexec_fn``: in the child, before exec, ask for SIGTERM when the parent dies (even
    by SIGKILL), so that a killed runner or server leaves no child behind."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def split_cores(cores: Iterable[int] | None = None) -> tuple[set[int], set[int]] | None:
    """(the server side's cores, the engine's cores): the first half (at least one) and the
    rest; None where there is one core or affinity cannot be set (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if len(available) < 2:
        return None
    half = len(available) // 2
    return set(available[:half]), set(available[half:])
