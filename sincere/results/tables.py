"""Tables over many runs (SPEC section 6): grid cells with intervals, CC pairs, simulated versus
measured pairs. Inputs are summary_runs rows (one per run, `sincere.runs.rundirs`)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sincere.results.stats import mean_ci, nanmean, paired_ratio_ci, ratio_ci
from sincere.runs.metrics import METRIC_KEYS

# A grid cell: runs of one engine on one platform in one CC mode whose parameters agree except
# the seed and repeat (cell_id hashes the rest: `sincere.results.summary.identity_columns`); the
# other columns are there to be read. ``platform`` is what ran: the GPU of a measured run, the
# profile set (less its _cc / _noncc suffix) of a simulated one.
CELL_KEY = ("engine", "platform", "strategy", "pattern", "mean_rps", "sla_s", "cc_mode",
            "max_new_tokens", "duration_s", "cell_id")
# A CC pair: two cells that differ only in cc_mode (and so in the profile they planned with).
CC_PAIR_KEY = tuple(k for k in CELL_KEY if k not in ("cc_mode", "cell_id")) + ("cc_pair_id",)
# A simulated and a measured cell of the same parameters, profile and cc_mode.
SIM_PAIR_KEY = tuple(k for k in CELL_KEY if k not in ("engine", "platform", "cell_id")) + (
    "sim_pair_id",)


def _complete(runs: pd.DataFrame) -> pd.Series:
    return runs["status"].eq("complete") if "status" in runs else pd.Series(True, runs.index)


def cell_table(runs: pd.DataFrame, metric_keys: Sequence[str] = METRIC_KEYS,
               confidence: float = 0.95) -> pd.DataFrame:
    """One row per grid cell: ``<metric>_mean``, ``_ci_low``, ``_ci_high`` over its complete
    runs (`sincere.results.stats.mean_ci`: Student t interval; NaN bounds for a cell with one
    run). ``runs`` counts the complete
    runs; failed ones are left out of the means, counted in ``runs_failed`` and named in
    ``failed_runs``."""
    if runs.empty:
        return pd.DataFrame(columns=[*CELL_KEY, "runs", "runs_failed", "failed_runs"])
    complete = _complete(runs)
    by_cell = [runs[k] for k in CELL_KEY]
    table = complete.groupby(by_cell, dropna=False, sort=True).sum().rename("runs").to_frame()
    grouped_failed = (~complete).groupby(by_cell, dropna=False)
    table["runs_failed"] = grouped_failed.sum()
    table["failed_runs"] = runs["run_id"].where(~complete).groupby(
        by_cell, dropna=False).agg(lambda ids: ";".join(ids.dropna().astype(str)))
    done = runs[complete]
    values = _metric_matrix(done, metric_keys)
    # Each cell's rows of ``values``, indexed as the counts above so that the join aligns them.
    positions = pd.Series(np.arange(len(done)), index=done.index).groupby(
        [done[k] for k in CELL_KEY], dropna=False, sort=True).agg(list)
    intervals = np.array([[mean_ci(values[rows, j], confidence) for j in range(len(metric_keys))]
                          for rows in positions], dtype=float).reshape(
        len(positions), len(metric_keys), 3)
    columns = {f"{key}_{part}": pd.Series(intervals[:, j, i], index=positions.index)
               for j, key in enumerate(metric_keys)
               for i, part in enumerate(("mean", "ci_low", "ci_high"))}
    table = table.join(pd.DataFrame(columns, index=positions.index), how="left")
    table[["runs", "runs_failed"]] = table[["runs", "runs_failed"]].astype(int)
    return table.reset_index()


def _metric_values(runs: pd.DataFrame, metric: str) -> np.ndarray:
    return pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float)


def _metric_matrix(runs: pd.DataFrame, metric_keys: Sequence[str]) -> np.ndarray:
    """The runs' values of every metric as numbers, a row per run and a column per metric
    (NaN where a value is missing or not a number)."""
    columns = [_metric_values(runs, m) for m in metric_keys]
    return np.column_stack(columns) if columns else np.empty((len(runs), 0))


def _same_seeds(noncc_seeds: Sequence[Hashable],
                cc_seeds: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Which runs pair repeat by repeat: for each seed both sides ran (in the non-CC side's
    order), the positions of the first non-CC and the first CC run with it. Runs without a
    seed never pair."""
    first_cc: dict[Hashable, int] = {}
    for position, seed in enumerate(cc_seeds):
        if pd.notna(seed):
            first_cc.setdefault(seed, position)
    paired_noncc, paired_cc, seen = [], [], set()
    for position, seed in enumerate(noncc_seeds):
        if pd.isna(seed) or seed in seen:
            continue
        seen.add(seed)
        if seed in first_cc:
            paired_noncc.append(position)
            paired_cc.append(first_cc[seed])
    return np.array(paired_noncc, dtype=int), np.array(paired_cc, dtype=int)


def _ratio(noncc: np.ndarray, cc: np.ndarray, paired: tuple[np.ndarray, np.ndarray],
           confidence: float) -> tuple[float, float, float, str, int]:
    """The non-CC / CC ratio of one metric's values over the repeats both sides ran with the
    same seed (``paired``: positions in ``noncc`` and ``cc``), or, when no seed matches, of the
    means with Fieller's interval (unpaired)."""
    if paired[0].size:
        ratio, low, high, how = paired_ratio_ci(noncc[paired[0]], cc[paired[1]], confidence)
        return ratio, low, high, how, int(paired[0].size)
    ratio, low, high = ratio_ci(noncc, cc, confidence)
    return ratio, low, high, "unpaired (no seed on both sides): Fieller's interval", 0


def cc_comparison_table(runs: pd.DataFrame, metric_keys: Sequence[str] = METRIC_KEYS,
                        confidence: float = 0.95) -> pd.DataFrame:
    """For cells run with CC off and on (all else equal): non-CC / CC ratio of each metric.

    Long format, one row per (cell, metric): the two means over complete repeats, and the ratio
    computed repeat by repeat (the two sides of a repeat share their arrivals) with the interval
    of the paired log-ratios (`sincere.results.stats.paired_ratio_ci`); ``interval`` says how it was
    obtained. Engine and platform are part of the pair, so simulated and measured runs, or runs
    on different GPUs or profile families, are never paired.
    """
    pair_key = list(CC_PAIR_KEY)
    rows = []
    done = runs[_complete(runs)] if not runs.empty else runs
    if not done.empty:
        done = done.reset_index(drop=True)
        values = _metric_matrix(done, metric_keys)
        seeds, modes = done["seed"].tolist(), done["cc_mode"].to_numpy(object)
        for key, cell in done[pair_key].groupby(pair_key, dropna=False, sort=True):
            members = cell.index.to_numpy()  # rows of ``done`` and ``values``
            noncc, cc = members[modes[members] == "off"], members[modes[members] == "on"]
            if noncc.size == 0 or cc.size == 0:
                continue
            paired = _same_seeds([seeds[r] for r in noncc], [seeds[r] for r in cc])
            for j, metric in enumerate(metric_keys):
                x, y = values[noncc, j], values[cc, j]
                ratio, low, high, how, pairs = _ratio(x, y, paired, confidence)
                rows.append({**dict(zip(pair_key, key, strict=True)), "metric": metric,
                             "noncc_mean": nanmean(x), "cc_mean": nanmean(y),
                             "ratio_noncc_over_cc": ratio, "ratio_ci_low": low,
                             "ratio_ci_high": high, "interval": how, "pairs": pairs,
                             "runs_noncc": int(noncc.size), "runs_cc": int(cc.size)})
    columns = [*pair_key, "metric", "noncc_mean", "cc_mean", "ratio_noncc_over_cc",
               "ratio_ci_low", "ratio_ci_high", "interval", "pairs", "runs_noncc", "runs_cc"]
    return pd.DataFrame(rows, columns=columns)


def sim_vs_real_table(runs: pd.DataFrame,
                      metric_keys: Sequence[str] = METRIC_KEYS) -> pd.DataFrame:
    """For cells run both simulated (engine sim) and measured (engine hf) with the same
    parameters, profile and cc_mode: the two means over complete runs side by side and the
    simulator's relative error, (simulated - measured) / measured; a row per (simulated
    platform, measured platform)."""
    pair_key = list(SIM_PAIR_KEY)
    rows = []
    done = runs[_complete(runs)] if not runs.empty else runs
    if not done.empty:  # only cells run both ways pair: the others are left out at once
        by_cell = [done[k] for k in pair_key]
        both = (done["engine"].eq("sim").groupby(by_cell, dropna=False).transform("any")
                & done["engine"].eq("hf").groupby(by_cell, dropna=False).transform("any"))
        done = done[both]
    if not done.empty:
        for key, cell in done.groupby(pair_key, dropna=False, sort=True):
            for sim_platform, sim in cell[cell["engine"] == "sim"].groupby("platform"):
                for real_platform, real in cell[cell["engine"] == "hf"].groupby("platform"):
                    for metric in metric_keys:
                        simulated = nanmean(_metric_values(sim, metric))
                        measured = nanmean(_metric_values(real, metric))
                        error = (simulated - measured) / measured if measured else math.nan
                        rows.append({**dict(zip(pair_key, key, strict=True)),
                                     "simulated_platform": sim_platform,
                                     "measured_platform": real_platform, "metric": metric,
                                     "simulated_mean": simulated, "measured_mean": measured,
                                     "relative_error": error, "runs_simulated": len(sim),
                                     "runs_measured": len(real),
                                     **_replay_range(sim, metric, measured)})
    columns = [*pair_key, "simulated_platform", "measured_platform", "metric", "simulated_mean",
               "measured_mean", "relative_error", "runs_simulated", "runs_measured",
               *REPLAY_RANGE_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


# A simulated side's spread over replays of its arrivals
# (sincere.simulation.simulator.replay_spread).
REPLAY_RANGE_COLUMNS = ("replays", "replays_mean", "replays_low", "replays_high",
                        "measured_within_replays")


def _replay_range(sim: pd.DataFrame, metric: str, measured: float) -> dict[str, Any]:
    """The simulated runs' replay mean and range of ``metric`` (averaged over repeats) and
    whether the measured mean lies within that range; empty figures without replays."""
    if f"replays_{metric}_low" not in sim or "replays" not in sim:
        return dict.fromkeys(REPLAY_RANGE_COLUMNS)
    replays = nanmean(_metric_values(sim, "replays"))
    mean, low, high = (nanmean(_metric_values(sim, f"replays_{metric}_{part}"))
                       for part in ("mean", "low", "high"))
    if not (replays > 1 and math.isfinite(low) and math.isfinite(high)):
        return dict.fromkeys(REPLAY_RANGE_COLUMNS)
    within = bool(low <= measured <= high) if math.isfinite(measured) else None
    return {"replays": int(replays), "replays_mean": mean, "replays_low": low,
            "replays_high": high, "measured_within_replays": within}


# The parts of a simulated-versus-measured latency error, and what explains them.
ERROR_PARTS = ("queue_wait_mean_s", "swap_wait_mean_s", "processing_mean_s")
MEASURED_FIT = ("processing_vs_profile", "swap_vs_profile", "server_time_per_batch_s")


def decomposition_table(sim_real: pd.DataFrame) -> pd.DataFrame:
    """One row per simulated/measured pair: SLA attainment both ways and its difference in
    points, mean latency both ways and its relative error, the latency error split into queue
    wait, swap wait and processing (simulated − measured, s), the mean swap both ways, and what
    the measured run says of its profile: batches and swaps against the profile, and the
    server's own time per batch, which no profile covers."""
    if sim_real.empty:
        return pd.DataFrame()
    key = [c for c in sim_real.columns if c not in (
        "metric", "simulated_mean", "measured_mean", "relative_error", "runs_simulated",
        "runs_measured", *REPLAY_RANGE_COLUMNS)]
    wide = sim_real.pivot_table(index=key, columns="metric",
                                values=["simulated_mean", "measured_mean"], dropna=False)
    rows = pd.DataFrame(index=wide.index)

    def both(metric: str) -> tuple[pd.Series, pd.Series]:
        return wide[("simulated_mean", metric)], wide[("measured_mean", metric)]

    sim, real = both("sla_attainment")
    rows["sla_attainment_simulated"], rows["sla_attainment_measured"] = sim, real
    rows["sla_attainment_difference_points"] = (sim - real) * 100.0
    sim, real = both("latency_mean_s")
    rows["latency_mean_simulated_s"], rows["latency_mean_measured_s"] = sim, real
    rows["latency_mean_relative_error"] = (sim - real) / real
    for part in ERROR_PARTS:
        sim, real = both(part)
        rows[f"{part.removesuffix('_s')}_error_s"] = sim - real
    # Where the simulated side replayed its arrivals: the range of its replays, and whether the
    # measurement fell in it (sincere.simulation.simulator.replay_spread).
    replayed = sim_real.dropna(subset=["replays_low", "replays_high"])
    if not replayed.empty:
        ranges = replayed.pivot_table(index=key, columns="metric",
                                      values=["replays_low", "replays_high"], dropna=False)
        for metric, name in (("sla_attainment", "sla_attainment"),
                             ("latency_mean_s", "latency_mean")):
            if ("replays_low", metric) not in ranges:
                continue
            low = ranges[("replays_low", metric)].reindex(rows.index)
            high = ranges[("replays_high", metric)].reindex(rows.index)
            real = both(metric)[1]
            rows[f"{name}_replays_low"], rows[f"{name}_replays_high"] = low, high
            rows[f"{name}_measured_within_replays"] = ((low <= real) & (real <= high)).where(
                low.notna() & real.notna())
    sim, real = both("swap_mean_s")
    rows["swap_mean_simulated_s"], rows["swap_mean_measured_s"] = sim, real
    for metric in MEASURED_FIT:
        rows[f"measured_{metric}"] = both(metric)[1]
    return rows.reset_index()
