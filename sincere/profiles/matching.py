"""Whether a profile set fits what a grid will serve: a profile for every model served,
measured on models of the size served (not on the tiny ones of a CPU demo that left their
profile of the same name), and, for a measured profile, with the batch engine that serves them.

A server planning with a profile that does not fit plans every timer and every batch on wrong
times, and a run cannot tell; so the grid checks before it starts. Whether the profile's CC
mode and load path are the server's own is the server's check
(``sincere.serving.experiment.profile_mismatches``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sincere.profiles.profile_set import ProfileSet

# A model served at more than this times (or less than 1/this) the size it was profiled at is
# another model: a dtype change (bfloat16 on disk, float32 on a CPU) is at most 2x.
SIZE_RATIO_LIMIT = 3.0
FIX = ("profile the models to be served (bash run_profiling.sh; run_pipeline.sh: "
       "FORCE_PROFILE=1), or name another profile set")


def fit_problems(profiles: ProfileSet, models: Sequence[str], served_gb: Mapping[str, float],
                 decode: str) -> list[str]:
    """Where ``profiles`` does not fit the ``models`` served (``served_gb``: their weights' GB,
    where known) and the engine's ``decode`` (checked on profiles measured here, not on the
    shipped examples); each with the fix. Empty when it fits."""
    name = Path(profiles.loading_file).name
    problems = []
    missing = [m for m in models if m not in profiles.models]
    if missing:
        problems.append(f"the profile {name} has no rows for {', '.join(missing)}: {FIX}")
    other_sizes = [f"{m} {profiles[m].size_gb:.2f} GB profiled, {served_gb[m]:.2f} GB served"
                   for m in models if m not in missing and served_gb.get(m)
                   and profiles[m].size_gb and not 1 / SIZE_RATIO_LIMIT
                   <= served_gb[m] / profiles[m].size_gb <= SIZE_RATIO_LIMIT]
    if other_sizes:
        problems.append(f"the profile {name} was measured on other models than those served "
                        f"({'; '.join(other_sizes)}): {FIX}")
    static = profiles.device.endswith("-static")
    if "_example" not in name and static != (decode == "static"):
        problems.append(f"the profile {name} was measured with the "
                        f"{'static' if static else 'eager'} engine but DECODE is {decode}: "
                        f"{FIX}")
    return problems
