"""Tables over many runs (SPEC section 6): grid cells with intervals, CC pairs, simulated versus
measured pairs. Inputs are summary_runs rows (one per run, `sincere.rundirs`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sincere.metrics import METRIC_KEYS
from sincere.stats import nanmean, ratio_ci, t_quantile

# The parameters that make a grid cell; repeats of one cell differ only in seed and repeat.
# ``platform`` is what ran: the GPU of a measured run, the profile set (less its _cc / _noncc
# suffix) of a simulated one, so that cells from different hardware or profiles never merge.
CELL_KEY = ("engine", "platform", "strategy", "pattern", "mean_rps", "sla_s", "cc_mode",
            "max_new_tokens", "duration_s")


def cell_table(runs: pd.DataFrame, metric_keys: Sequence[str] = METRIC_KEYS,
               confidence: float = 0.95) -> pd.DataFrame:
    """One row per grid cell: ``<metric>_mean``, ``_ci_low``, ``_ci_high`` over its repeats
    (Student t interval; NaN bounds for a cell with one run)."""
    if runs.empty:
        return pd.DataFrame(columns=[*CELL_KEY, "runs", "runs_failed"])
    by_cell = [runs[k] for k in CELL_KEY]
    table = runs.groupby(by_cell, dropna=False, sort=True).size().rename("runs").to_frame()
    failed = runs["status"].ne("complete") if "status" in runs else pd.Series(False, runs.index)
    table["runs_failed"] = failed.groupby(by_cell, dropna=False).sum()
    columns = {}
    for key in metric_keys:
        grouped = pd.to_numeric(runs[key], errors="coerce").groupby(by_cell, dropna=False)
        mean, std, count = grouped.mean(), grouped.std(ddof=1), grouped.count()
        t = count.map(lambda n: t_quantile(0.5 + confidence / 2.0, n - 1) if n > 1 else math.nan)
        half = t * std / np.sqrt(count)
        columns[f"{key}_mean"] = mean
        columns[f"{key}_ci_low"] = mean - half
        columns[f"{key}_ci_high"] = mean + half
    table = pd.concat([table, pd.DataFrame(columns)], axis=1)
    return table.reset_index()


def _metric_values(runs: pd.DataFrame, metric: str) -> np.ndarray:
    return pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float)


def cc_comparison_table(runs: pd.DataFrame, metric_keys: Sequence[str] = METRIC_KEYS,
                        confidence: float = 0.95) -> pd.DataFrame:
    """For cells run with CC off and on (all else equal): non-CC / CC ratio of each metric.

    Long format, one row per (cell, metric): the two means over repeats and the ratio of means
    with Fieller's interval (`ratio_ci`). Engine and platform are part of the cell, so simulated
    and measured runs, or runs on different GPUs or profile families, are never paired.
    """
    pair_key = [k for k in CELL_KEY if k != "cc_mode"]
    rows = []
    if not runs.empty:
        for key, cell in runs.groupby(pair_key, dropna=False, sort=True):
            noncc = cell[cell["cc_mode"] == "off"]
            cc = cell[cell["cc_mode"] == "on"]
            if noncc.empty or cc.empty:
                continue
            for metric in metric_keys:
                x, y = _metric_values(noncc, metric), _metric_values(cc, metric)
                ratio, low, high = ratio_ci(x, y, confidence)
                rows.append({**dict(zip(pair_key, key, strict=True)), "metric": metric,
                             "noncc_mean": nanmean(x), "cc_mean": nanmean(y),
                             "ratio_noncc_over_cc": ratio, "ratio_ci_low": low,
                             "ratio_ci_high": high, "runs_noncc": len(noncc),
                             "runs_cc": len(cc)})
    columns = [*pair_key, "metric", "noncc_mean", "cc_mean", "ratio_noncc_over_cc",
               "ratio_ci_low", "ratio_ci_high", "runs_noncc", "runs_cc"]
    return pd.DataFrame(rows, columns=columns)


def sim_vs_real_table(runs: pd.DataFrame,
                      metric_keys: Sequence[str] = METRIC_KEYS) -> pd.DataFrame:
    """For cells run both simulated (engine sim) and measured (engine hf) with the same
    parameters and cc_mode: the two means side by side and the simulator's relative error,
    (simulated - measured) / measured; a row per (simulated platform, measured platform)."""
    pair_key = [k for k in CELL_KEY if k not in ("engine", "platform")]
    rows = []
    if not runs.empty:
        for key, cell in runs.groupby(pair_key, dropna=False, sort=True):
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
                                     "runs_measured": len(real)})
    columns = [*pair_key, "simulated_platform", "measured_platform", "metric", "simulated_mean",
               "measured_mean", "relative_error", "runs_simulated", "runs_measured"]
    return pd.DataFrame(rows, columns=columns)
