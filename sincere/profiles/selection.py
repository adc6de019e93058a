"""Which profile set a run plans with, and whether it fits the machine the run is on and
what it serves.

``auto`` names the set measured on this device and CC mode with this engine
(``<device>[-static]_<cc|noncc>``, what run_profiling.sh writes here); any other name is taken
as it is. ``profile_mismatches`` says where a profile contradicts the server it would plan for
(CC mode, load path); ``fit_problems`` where it does not fit the models and engine served (a
model without rows, models of another size, such as the tiny ones of a CPU demo that left a
profile of the same name, the other batch engine). A server planning with a profile that does
not fit plans every timer and every batch on wrong times, and a run cannot tell.
The server (``sincere.serving.experiment``), the grid (``sincere.grid``) and
``run_pipeline.sh`` ask here; reading a set is ``sincere.profiles.profile_set``'s.

    python -m sincere.profiles.selection --profile-name [--device cuda] [--decode static]

prints this machine's set name (what ``PROFILES=auto`` uses).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sincere.cli import parse_constants
from sincere.profiles.files import cc_label, device_name
from sincere.profiles.profile_set import ProfileError, ProfileSet, load_profiles

# A model served at more than this times (or less than 1/this) the size it was profiled at is
# another model: a dtype change (bfloat16 on disk, float32 on a CPU) is at most 2x.
SIZE_RATIO_LIMIT = 3.0
FIX = ("profile the models to be served (bash run_profiling.sh; run_pipeline.sh: "
       "FORCE_PROFILE=1), or name another profile set")


def auto_profile_name(environment: dict[str, Any], device_type: str,
                      decode: str = "eager") -> str:
    """``<device>[-static]_<cc|noncc>`` of this machine and engine: the set run_profiling.sh
    writes here."""
    return (f"{device_name(environment, device_type, decode)}_"
            f"{cc_label(environment.get('cc_mode', ''))}")


def resolve_profiles(name: str, profiles_dir: Path, environment: dict[str, Any],
                     device_type: str, std_factor: float, decode: str = "eager") -> ProfileSet:
    """The profile set ``name``, or with ``auto`` the one measured on this device and CC mode;
    ValueError with what to do when there is none."""
    wanted = auto_profile_name(environment, device_type, decode) if name == "auto" else name
    try:
        return load_profiles(wanted, profiles_dir, std_factor=std_factor)
    except ProfileError as exc:
        hint = " (run run_profiling.sh on this machine first)" if name == "auto" else ""
        raise ValueError(f"profile set {wanted!r}: {exc}{hint}") from None


def profile_mismatches(profiles: ProfileSet, environment: dict[str, Any], host_cache: bool,
                       models: list[str]) -> list[str]:
    """Where the profile contradicts this server, each with its fix: a CC mode other than the
    one detected here, or load times of another load path than the one swaps will take
    (host RAM with HOST_CACHE, the disk without). Every timer would be planned on wrong times."""
    name = Path(profiles.loading_file).name
    problems = []
    detected, profiled = environment.get("cc_mode"), profiles.cc_mode
    if {detected, profiled} <= {"on", "off"} and detected != profiled:
        problems.append(
            f"the profile {name} was measured with CC {profiled} but this GPU has CC {detected}: "
            f"profile this machine (run_profiling.sh) or name a {cc_label(detected)} profile set")
    for model in models:
        path = profiles[model].load_path
        if not path:
            continue
        cached = path.startswith("host_cache")
        if cached != host_cache:
            problems.append(
                f"{model}: the profile {name} times loads by {path} but HOST_CACHE is "
                f"{'on' if host_cache else 'off'}, so swaps will load "
                f"{'from host RAM' if host_cache else 'from disk'}: set HOST_CACHE to "
                f"{'true' if cached else 'false'} or profile with that load path")
    return problems


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


def _device_type(device: str) -> str:
    """The torch device type of ``device``, or of this machine's default (cuda when present)."""
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type


def grid_profiles(name: str, profiles_dir: Path, device: str, decode: str,
                  std_factor: float) -> ProfileSet:
    """The profile set the servers of a grid run on this machine will plan with (for the runs'
    identity before they run); ValueError when there is none."""
    from sincere.host.environment import environment_block

    environment = environment_block() if name == "auto" else {}
    return resolve_profiles(name, profiles_dir, environment, _device_type(device), std_factor,
                            decode)


def main(argv: list[str] | None = None) -> int:
    """``python -m sincere.profiles.selection --profile-name``: this machine's profile set name
    (what ``PROFILES=auto`` uses)."""
    args = parse_constants({"PROFILE_NAME": False, "DEVICE": "", "DECODE": "eager"}, argv,
                           main.__doc__, comments={
                               "PROFILE_NAME": "print <device>_<cc|noncc> of this machine",
                               "DEVICE": "torch device (\"\" = cuda when there is one, else cpu)",
                               "DECODE": "batch engine: eager or static"})
    if not args.PROFILE_NAME:
        print("error: give --profile-name", file=sys.stderr)
        return 2
    from sincere.host.environment import environment_block

    print(auto_profile_name(environment_block(), _device_type(args.DEVICE), args.DECODE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
