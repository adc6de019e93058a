"""The engine's process keeps the memory its batches free (sincere.engine.allocator)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Touch 256 MiB in one block, free it, and print the resident memory before and after the free.
PROBE = """
import sys
from sincere.engine.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20
block = bytearray(256 * 2**20)  # zero-filled: every page touched
held = resident_mib()
del block
print(held, resident_mib())
"""


def resident_after_free(mode: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True).stdout
    held, freed = out.split()
    return float(held), float(freed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_memory_stays_in_the_process_only_when_told() -> None:
    held, freed = resident_after_free("default")
    assert held - freed > 200  # by default the block goes back to the kernel at once
    held, freed = resident_after_free("keep")
    assert held - freed < 16  # kept: the next batch finds it without faulting it in
