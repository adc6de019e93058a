"""Files at the lowest level, for every stage that writes or fingerprints one: a file's digest.

The run directory's own files (which CSVs, their columns and dtypes, run.json) are owned by
``sincere.runs``; profile files by ``sincere.profiles``. This module knows nothing of either.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

DIGEST_CHARS = 16  # hex digits kept of a sha256: a file's digest, a run's params hash


@lru_cache(maxsize=64)
def file_digest(path: str) -> str:
    """sha256 of a file's bytes (first DIGEST_CHARS hex digits); the path itself when
    unreadable."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:DIGEST_CHARS]
    except OSError:
        return f"unreadable:{path}"
