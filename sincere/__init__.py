"""SINCERE: serving LLMs inside and outside a confidential VM, measured.

Shared logic for the top-level scripts, grouped by stage (docs/code.md says which package holds
what). The scripts stay thin and import from here.
"""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent  # the scripts, profiling_results/, models/
