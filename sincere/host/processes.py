"""Child processes that never outlive their parent (Linux parent-death signal)."""

from __future__ import annotations

import ctypes
import signal

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
