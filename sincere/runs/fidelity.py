"""How a run's batches and swaps compare with the profile it planned with.

The simulator replays the profiles, so where a measured run's batches take longer than profiled,
or its swaps differ, or the server spends time between batches that no profile covers, the
simulation of the same arrivals will differ from the measurement. These figures say which, per
run; results processing shows them beside the simulated-versus-measured errors.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sincere.profiles.profile_set import ProfileError, ProfileSet

# Summary keys only a run's writer can compute (it knows the profile and, for the server, its
# own scheduling delays); results processing copies them from run.json.
FIDELITY_KEYS = ("processing_vs_profile", "swap_vs_profile", "server_time_per_batch_s")


def profiled_swap_s(profiles: ProfileSet, previous: str | None, model: str) -> float:
    """U_previous + L_model at their means (what a swap costs on average, not as planned)."""
    unload_s = profiles[previous].unload_mean_s if previous else 0.0
    return unload_s + profiles[model].load_mean_s


def longest_prompts(requests: pd.DataFrame | None) -> dict[int, int]:
    """Each batch's longest prompt in tokens (batch id -> tokens), from the requests that
    record both; empty when none do."""
    if requests is None or not {"batch_id", "prompt_tokens"} <= set(requests.columns):
        return {}
    known = requests.dropna(subset=["batch_id", "prompt_tokens"])
    longest = known.groupby(known["batch_id"].astype(int))["prompt_tokens"].max()
    return {int(batch): int(tokens) for batch, tokens in longest.items()}


def profile_fit(batches: pd.DataFrame, profiles: ProfileSet, max_new_tokens: int,
                requests: pd.DataFrame | None = None) -> dict[str, float | None]:
    """``processing_vs_profile``: mean over batches that ran of processing_s / the profile's
    time for the batch (by its longest prompt when ``requests`` give the prompts' tokens and
    the profile has a length term, as the simulator times it, else by its size);
    ``swap_vs_profile``: mean over batches that swapped of swap_s / (U_from + L_m), the model
    unloaded being ``swap_from`` (none before the first load). 1 means the run went as
    profiled."""
    from sincere.runs.metrics import swapped_batches

    if batches is None or batches.empty:
        return {"processing_vs_profile": None, "swap_vs_profile": None}
    longest = longest_prompts(requests)
    ordered = batches.sort_values("start_s", kind="stable")
    swapped = swapped_batches(ordered)
    processing, swaps = [], []
    for row, swap in zip(ordered.itertuples(index=False), swapped, strict=True):
        model = str(row.model)
        unloaded = row.swap_from if isinstance(row.swap_from, str) and row.swap_from else None
        try:
            if row.processing_s > 0:
                processing.append(row.processing_s / profiles[model].batch_time_s(
                    int(row.batch_size), longest.get(int(row.batch_id)), max_new_tokens)[0])
            if swap:
                expected = profiled_swap_s(profiles, unloaded, model)
                if expected > 0:
                    swaps.append(row.swap_s / expected)
        except ProfileError:
            pass  # a model added mid-run without a profile: nothing to compare with
    return {"processing_vs_profile": _mean(processing), "swap_vs_profile": _mean(swaps)}


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None
