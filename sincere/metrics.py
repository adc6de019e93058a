"""The numbers SPEC section 6 asks for: per-run metrics, per-cell means with confidence intervals,
non-CC / CC ratios and simulated-versus-measured errors.

Pure functions of DataFrames in the documented schemas (`sincere.schemas`), vectorised so that the
simulator can call `run_metrics` for every run it writes and `process_results.py` can summarise a
whole grid in seconds. Undefined values (no completed request, no GPU samples) are ``None`` in a
run's dict, so that they serialise to JSON ``null``, and NaN in tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

# Every key `run_metrics` returns, in the order of the summary tables.
METRIC_KEYS = (
    "requests_issued", "requests_received", "requests_lost", "requests_ok", "requests_rejected",
    "requests_failed", "requests_unserved", "sla_met_requests", "sla_attainment",
    "latency_mean_s", "latency_p50_s", "latency_p90_s", "latency_p99_s",
    "queue_wait_mean_s", "swap_wait_mean_s", "processing_mean_s",
    "throughput_rps", "output_tokens_per_s", "goodput_rps",
    "gpu_util_mean_pct", "gpu_busy_fraction", "swap_fraction",
    "swaps", "swap_time_s", "batches", "batch_size_mean", "run_time_s",
)

# What each metric means, in words a reader of the report needs (shown in report.html).
METRIC_DESCRIPTIONS = {
    "requests_issued": "Requests the traffic generator sent: run.json's accounting 'issued', else "
                       "the rows of client.csv, else requests_received. The denominator of "
                       "sla_attainment.",
    "requests_received": "Requests the server recorded: the rows of requests.csv, whatever their "
                         "status.",
    "requests_lost": "requests_issued - requests_received: requests the generator sent that the "
                     "server never recorded (e.g. a connection error). They count as misses.",
    "requests_ok": "Requests that completed (status ok).",
    "requests_rejected": "Requests the server refused on arrival (status rejected).",
    "requests_failed": "Requests whose batch or model load failed (status failed).",
    "requests_unserved": "Requests still queued when the drain after the end of traffic timed out "
                         "(status unserved): they never ran.",
    "sla_met_requests": "Completed requests whose latency was within the SLA.",
    "sla_attainment": "sla_met_requests / requests_issued, a fraction from 0 to 1. Rejected, "
                      "failed, unserved and lost requests are in the denominator and count as "
                      "misses, so a strategy cannot look good by leaving requests behind.",
    "latency_mean_s": "Mean end-to-end latency of completed requests, from arrival at the server "
                      "to the end of their batch (s). Requests that never completed have no "
                      "latency and are left out here; they show up in sla_attainment.",
    "latency_p50_s": "Median latency of completed requests (s); percentiles interpolate linearly "
                     "between order statistics (numpy's default).",
    "latency_p90_s": "90th percentile latency of completed requests (s).",
    "latency_p99_s": "99th percentile latency of completed requests (s).",
    "queue_wait_mean_s": "Mean time a completed request waited in its model's queue before its "
                         "batch was dispatched (s).",
    "swap_wait_mean_s": "Mean time from a completed request's batch dispatch to the start of its "
                        "inference: the model swap its batch needed (unload of the resident model "
                        "and load of its own), about 0 without a swap (s).",
    "processing_mean_s": "Mean time of the batch inference a completed request was part of (s).",
    "throughput_rps": "Completed requests per second over the run time (run_time_s).",
    "output_tokens_per_s": "Output tokens of completed requests per second over the run time.",
    "goodput_rps": "SLA-met requests per second over the run time.",
    "gpu_util_mean_pct": "Mean of the NVML GPU utilisation samples (monitor.csv, those with "
                         "0 <= t_s <= run_time_s) (%): the share of each sampling period in which "
                         "a kernel ran, not how full the GPU was. Empty for simulated runs and "
                         "runs without a GPU.",
    "gpu_busy_fraction": "Total batch processing time (batches.csv) / run time: the share of the "
                         "run the GPU spent in inference; defined for simulated runs too.",
    "swap_fraction": "Total swap time (swap_time_s) / run time.",
    "swaps": "Number of batches that needed a model swap (a different model, or none, was resident "
             "before them), the first load included.",
    "swap_time_s": "Total time spent swapping models: swap_s (dispatch to start: unload + load) "
                   "summed over the batches that swapped (s).",
    "batches": "Number of batches run.",
    "batch_size_mean": "Mean number of requests per batch.",
    "run_time_s": "Run time (s): from the run's start to the end of the traffic or of the last "
                  "batch after it (the drain), whichever is later (run.json's run_time_s).",
}


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 (NaN where empty or missing), whatever dtype the CSV reader chose."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    series = frame[column]
    if not pd.api.types.is_float_dtype(series.dtype):
        series = pd.to_numeric(series, errors="coerce")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _flags(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A True/False column as a bool array, whether read as bool or as text ("True", "1")."""
    if column not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    series = frame[column]
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.fillna(False).to_numpy(dtype=bool)
    return series.isin([True, "True", "true", "TRUE", "1"]).to_numpy(dtype=bool)


def _texts(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A text column as an object array with empty strings for missing values."""
    if column not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    series = frame[column]
    if not (pd.api.types.is_string_dtype(series.dtype) or series.dtype == object):
        series = series.astype(str)
    return series.fillna("").to_numpy(dtype=object)


def _mean_or_none(values: np.ndarray) -> float | None:
    mean = _nanmean(values)
    return mean if math.isfinite(mean) else None


def _per_second(count: float, run_time_s: float) -> float | None:
    return float(count) / run_time_s if run_time_s > 0 else None


def completed_latencies_s(requests: pd.DataFrame) -> np.ndarray:
    """End-to-end latencies (end_s - arrival_s) of the completed (status ok) requests."""
    latency_s = (_numbers(requests, "end_s") - _numbers(requests, "arrival_s"))[
        _texts(requests, "status") == "ok"]
    return latency_s[np.isfinite(latency_s)]


def run_metrics(requests: pd.DataFrame, batches: pd.DataFrame | None, run_time_s: float,
                monitor: pd.DataFrame | None = None,
                issued: int | None = None) -> dict[str, float | int | None]:
    """One run's metrics (SPEC section 6) from its requests.csv, batches.csv and monitor.csv rows.

    ``issued`` is how many requests the generator sent (default: the rows of ``requests``); the
    SLA denominator is the larger of the two, so requests the server never recorded are misses.
    ``batches=None`` (batches.csv unreadable) leaves the batch metrics ``None``.
    """
    run_time_s = float(run_time_s) if run_time_s is not None else math.nan
    run_time_s = run_time_s if math.isfinite(run_time_s) else math.nan
    status = _texts(requests, "status")
    ok = status == "ok"
    latency_s = completed_latencies_s(requests)
    sla_met = int(np.count_nonzero(_flags(requests, "sla_met") & ok))
    received = len(requests)
    issued = max(received, int(issued)) if issued is not None else received
    if latency_s.size:
        p50, p90, p99 = np.percentile(latency_s, [50.0, 90.0, 99.0])
        latency = {"latency_mean_s": float(latency_s.mean()), "latency_p50_s": float(p50),
                   "latency_p90_s": float(p90), "latency_p99_s": float(p99)}
    else:
        latency = dict.fromkeys(("latency_mean_s", "latency_p50_s", "latency_p90_s",
                                 "latency_p99_s"))
    completed = int(np.count_nonzero(ok))
    output_tokens = float(np.nansum(_numbers(requests, "output_tokens")[ok]))
    metrics: dict[str, float | int | None] = {
        "requests_issued": issued,
        "requests_received": received,
        "requests_lost": issued - received,
        "requests_ok": completed,
        "requests_rejected": int(np.count_nonzero(status == "rejected")),
        "requests_failed": int(np.count_nonzero(status == "failed")),
        "requests_unserved": int(np.count_nonzero(status == "unserved")),
        "sla_met_requests": sla_met,
        "sla_attainment": sla_met / issued if issued else None,
        **latency,
        "queue_wait_mean_s": _mean_or_none(_numbers(requests, "queue_wait_s")[ok]),
        "swap_wait_mean_s": _mean_or_none(_numbers(requests, "swap_wait_s")[ok]),
        "processing_mean_s": _mean_or_none(_numbers(requests, "processing_s")[ok]),
        "throughput_rps": _per_second(completed, run_time_s),
        "output_tokens_per_s": _per_second(output_tokens, run_time_s),
        "goodput_rps": _per_second(sla_met, run_time_s),
        "gpu_util_mean_pct": _gpu_util_mean_pct(monitor, run_time_s),
    }
    metrics.update(_batch_metrics(batches, run_time_s))
    metrics["run_time_s"] = run_time_s if math.isfinite(run_time_s) else None
    return {key: metrics[key] for key in METRIC_KEYS}


def _gpu_util_mean_pct(monitor: pd.DataFrame | None, run_time_s: float) -> float | None:
    """Mean NVML utilisation of the samples taken during the run (0 <= t_s <= run_time_s; all
    samples when t_s or the run time is unknown)."""
    if monitor is None:
        return None
    util_pct = _numbers(monitor, "gpu_util_pct")
    t_s = _numbers(monitor, "t_s")
    if math.isfinite(run_time_s) and np.isfinite(t_s).any():
        util_pct = util_pct[(t_s >= 0.0) & (t_s <= run_time_s)]
    return _mean_or_none(util_pct)


def swapped_batches(batches: pd.DataFrame) -> np.ndarray:
    """Which batches needed a model swap: the model resident before them (the previous batch's,
    in start order; none before the first) was another, or swap_from names another model.

    swap_s alone cannot tell: the real server records dispatch-to-start there, a few
    microseconds for a batch of the resident model.
    """
    model = _texts(batches, "model")
    order = np.argsort(_numbers(batches, "start_s"), kind="stable")
    previous = np.empty(len(batches), dtype=object)
    previous[order] = np.r_[np.array([""], dtype=object), model[order][:-1]]
    swap_from = _texts(batches, "swap_from")
    return (previous != model) | ((swap_from != "") & (swap_from != model))


def _batch_metrics(batches: pd.DataFrame | None,
                   run_time_s: float) -> dict[str, float | int | None]:
    """GPU busy and swap fractions, swap count and time, batch count and mean size."""
    if batches is None:
        return dict.fromkeys(("gpu_busy_fraction", "swap_fraction", "swaps", "swap_time_s",
                              "batches", "batch_size_mean"))
    swapped = swapped_batches(batches)
    swap_time_s = float(np.nansum(_numbers(batches, "swap_s")[swapped]))
    busy_s = float(np.nansum(_numbers(batches, "processing_s")))
    return {
        "gpu_busy_fraction": busy_s / run_time_s if run_time_s > 0 else None,
        "swap_fraction": swap_time_s / run_time_s if run_time_s > 0 else None,
        "swaps": int(np.count_nonzero(swapped)),
        "swap_time_s": swap_time_s,
        "batches": len(batches),
        "batch_size_mean": _mean_or_none(_numbers(batches, "batch_size")),
    }


# --- Student t quantiles, numpy/math only (scipy is not a dependency) ----------------------------

def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the regularised incomplete beta function."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def _regularised_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _regularised_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def _t_pdf(t: float, df: float) -> float:
    """Density of Student's t with ``df`` degrees of freedom."""
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


@lru_cache(maxsize=4096)
def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom.

    Newton's method on the CDF, kept inside a bisection bracket so that it always converges.
    """
    if not 0.0 < probability < 1.0 or not df > 0:
        return math.nan
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        low, high = high, high * 2.0
    t = 0.5 * (low + high)
    for _ in range(100):
        error = t_cdf(t, df) - probability
        if error < 0:
            low = t
        else:
            high = t
        step = error / _t_pdf(t, df)
        candidate = t - step
        t = candidate if low < candidate < high else 0.5 * (low + high)
        if abs(step) <= 1e-12 * max(1.0, abs(t)) or high - low <= 1e-12 * max(1.0, high):
            break
    return t


def _finite(values: Iterable[float | None]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def mean_ci(values: Iterable[float | None],
            confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean with its Student t confidence interval.

    None and NaN values are dropped. One value gives NaN bounds (no spread to estimate); none
    gives all NaN.
    """
    sample = _finite(values)
    if sample.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(sample.mean())
    if sample.size == 1:
        return mean, math.nan, math.nan
    half = (t_quantile(0.5 + confidence / 2.0, sample.size - 1)
            * float(sample.std(ddof=1)) / math.sqrt(sample.size))
    return mean, mean - half, mean + half


def ratio_ci(numerator: Iterable[float | None], denominator: Iterable[float | None],
             confidence: float = 0.95) -> tuple[float, float, float]:
    """(ratio, low, high): mean(numerator) / mean(denominator) with Fieller's interval.

    The two samples are independent runs (e.g. non-CC and CC repeats of one cell). Fieller's
    interval solves (mean_x - r mean_y)^2 = t^2 (var_x/n_x + r^2 var_y/n_y) for r, with t at the
    Welch-Satterthwaite degrees of freedom of that pivot at the point estimate. It is NaN when
    either side has fewer than two runs (no variance to estimate) and when the denominator's mean
    is not clearly away from zero (the interval would be unbounded).
    """
    x, y = _finite(numerator), _finite(denominator)
    if x.size == 0 or y.size == 0 or y.mean() == 0:
        return math.nan, math.nan, math.nan
    mean_x, mean_y = float(x.mean()), float(y.mean())
    ratio = mean_x / mean_y
    if x.size < 2 or y.size < 2:
        return ratio, math.nan, math.nan
    var_x = float(x.var(ddof=1)) / x.size  # variance of each sample mean
    var_y = float(y.var(ddof=1)) / y.size
    pivot_var = var_x + ratio * ratio * var_y
    if pivot_var == 0.0:
        return ratio, ratio, ratio
    df = pivot_var ** 2 / (var_x ** 2 / (x.size - 1) + (ratio * ratio * var_y) ** 2 / (y.size - 1))
    t = t_quantile(0.5 + confidence / 2.0, df)
    scale = mean_y * mean_y - t * t * var_y
    if scale <= 0.0:
        return ratio, math.nan, math.nan
    spread = t * math.sqrt(mean_x * mean_x * var_y + mean_y * mean_y * var_x
                           - t * t * var_x * var_y)
    return ratio, (mean_x * mean_y - spread) / scale, (mean_x * mean_y + spread) / scale


# --- tables over runs ----------------------------------------------------------------------------

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
                             "noncc_mean": _nanmean(x), "cc_mean": _nanmean(y),
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
                        simulated = _nanmean(_metric_values(sim, metric))
                        measured = _nanmean(_metric_values(real, metric))
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


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan
