"""One run's metrics (SPEC section 6) from its requests.csv, batches.csv and monitor.csv.

Tables over many runs are in `sincere.results.tables`. Pure functions of DataFrames in the
documented schemas (`sincere.schemas`), vectorised so that the simulator can call `run_metrics` for
every run it writes. Undefined values (no completed request, no GPU samples) are ``None`` in a run's
dict, so that they serialise to JSON ``null``, and NaN in tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sincere.runs.accounting import server_books
from sincere.schemas import REQUEST_STATUSES

# Every key `run_metrics` returns, in the order of the summary tables.
METRIC_KEYS = (
    "requests_issued", "requests_received", "requests_lost", "requests_ok", "requests_rejected",
    "requests_failed", "requests_unserved", "requests_shed", "sla_met_requests", "sla_attainment",
    "sla_attainment_bound", "sla_attainment_gap",
    "latency_mean_s", "latency_p50_s", "latency_p90_s", "latency_p99_s",
    "queue_wait_mean_s", "swap_wait_mean_s", "processing_mean_s",
    "throughput_rps", "output_tokens_per_s", "goodput_rps",
    "gpu_util_mean_pct", "gpu_busy_fraction", "swap_fraction",
    "swaps", "swap_time_s", "swap_mean_s", "batches", "batch_size_mean",
    "traffic_window_s", "drain_s", "completed_in_drain", "run_time_s",
    "processing_vs_profile", "swap_vs_profile", "server_time_per_batch_s",
)
# Keys only a run's writer can compute (it knows the profile and its own delays): run_metrics
# copies them from what it is given, results processing from run.json's summary.
WRITTEN_KEYS = ("sla_attainment_bound", "processing_vs_profile", "swap_vs_profile",
                "server_time_per_batch_s")

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
    "requests_shed": "Queued requests the strategy dropped because they could no longer meet "
                     "their SLA even if dispatched at once (status shed; SHED_LATE).",
    "sla_met_requests": "Completed requests whose latency was within the SLA.",
    "sla_attainment": "sla_met_requests / requests_issued, a fraction from 0 to 1, over every "
                      "issued request, the drain included. Rejected, failed, unserved, shed and "
                      "lost requests are in the denominator and count as misses, so a strategy "
                      "cannot look good by leaving requests behind.",
    "sla_attainment_bound": "An upper bound on sla_attainment that no strategy could beat on this "
                            "run's arrivals: one GPU, no swaps, each request needing only its "
                            "model's best per-request time (P(B)/B) within its own window "
                            "[arrival, arrival + SLA] (sincere/scheduling/bound.py; README).",
    "sla_attainment_gap": "sla_attainment_bound - sla_attainment: how far the strategy is from "
                          "what no strategy could beat.",
    "latency_mean_s": "Mean end-to-end latency of completed requests, from arrival at the server "
                      "to the end of their batch (s), the drain included. Requests that never "
                      "completed have no latency and are left out here; they show up in "
                      "sla_attainment.",
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
    "throughput_rps": "Requests completed within the traffic window (end_s <= traffic_window_s) "
                      "per second of that window; the drain is left out, so that strategies "
                      "that leave work for the drain are not flattered.",
    "output_tokens_per_s": "Output tokens of the requests completed within the traffic window, "
                           "per second of that window.",
    "goodput_rps": "SLA-met requests completed within the traffic window, per second of it.",
    "gpu_util_mean_pct": "Mean of the NVML GPU utilisation samples taken in the traffic window "
                         "(monitor.csv, 0 <= t_s <= traffic_window_s) (%): the share of each "
                         "sampling period in which a kernel ran, not how full the GPU was. Empty "
                         "for simulated runs and runs without a GPU.",
    "gpu_busy_fraction": "Time in inference within the traffic window (batches.csv, each batch "
                         "cut at the window's end) / the window; defined for simulated runs "
                         "too.",
    "swap_fraction": "Time in model swaps within the traffic window / the window.",
    "swaps": "Number of batches that needed a model swap (a different model, or none, was resident "
             "before them), the first load included.",
    "swap_time_s": "Total time spent swapping models, the drain included: swap_s (dispatch to "
                   "start: unload + load) summed over the batches that swapped, a failed load "
                   "included (s).",
    "swap_mean_s": "swap_time_s / swaps: the mean time of one swap (s).",
    "batches": "Number of batches run.",
    "batch_size_mean": "Mean number of requests per batch.",
    "traffic_window_s": "The traffic window (s): from the run's start to the end of the traffic, "
                        "duration_s (for a whole trace replayed: its last arrival). Every rate "
                        "and fraction above is over this window.",
    "drain_s": "The drain (s): from the end of the traffic window to the last completion; 0 when "
               "nothing completed after it.",
    "completed_in_drain": "Requests that completed after the traffic window, in the drain.",
    "run_time_s": "Run time (s): the traffic window and the drain after it, to the end of the "
                  "last batch.",
    "processing_vs_profile": "Mean over the run's batches of processing_s / P(batch size) of the "
                             "profile it planned with: 1 when batches take what was profiled.",
    "swap_vs_profile": "Mean over the run's swaps of swap_s / (unload + load) at the profile's "
                       "means: 1 when swaps take what was profiled.",
    "server_time_per_batch_s": "The server's own time per batch that neither the batch nor its "
                               "swap covers (s): from the event that made a batch due (the "
                               "previous batch's end, the arrival or the timer) to its dispatch, "
                               "plus dispatch to start when no swap was needed; 0 in a "
                               "simulation.",
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
    """The mean of the finite values; None when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


LATENCY_KEYS = ("latency_mean_s", "latency_p50_s", "latency_p90_s", "latency_p99_s")


def latency_summary(latency_s: np.ndarray) -> dict[str, float | None]:
    """Mean, median, 90th and 99th percentile of completed requests' latencies (percentiles
    interpolate linearly between order statistics, numpy's default); None without any."""
    if not latency_s.size:
        return dict.fromkeys(LATENCY_KEYS)
    p50, p90, p99 = np.percentile(latency_s, [50.0, 90.0, 99.0])
    return dict(zip(LATENCY_KEYS, (float(latency_s.mean()), float(p50), float(p90),
                                   float(p99)), strict=True))


def _per_second(count: float, window_s: float) -> float | None:
    return float(count) / window_s if window_s > 0 else None


def completed(latency_s: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The finite latencies of the requests that completed (``ok``)."""
    latency_s = latency_s[ok]
    return latency_s[np.isfinite(latency_s)]


def completed_latencies_s(requests: pd.DataFrame) -> np.ndarray:
    """End-to-end latencies (end_s - arrival_s) of the completed (status ok) requests."""
    return completed(_numbers(requests, "end_s") - _numbers(requests, "arrival_s"),
                     _texts(requests, "status") == "ok")


def _overlap_s(begin_s: np.ndarray, end_s: np.ndarray, window_s: float) -> float:
    """Total time of the intervals [begin, end] that lies inside [0, window_s]."""
    inside = np.clip(np.minimum(end_s, window_s) - np.maximum(begin_s, 0.0), 0.0, None)
    return float(np.nansum(inside))


def run_metrics(requests: pd.DataFrame, batches: pd.DataFrame | None, traffic_window_s: float,
                monitor: pd.DataFrame | None = None, issued: int | None = None,
                written: Mapping[str, float | None] | None = None
                ) -> dict[str, float | int | None]:
    """One run's metrics (SPEC section 6) from its requests.csv, batches.csv and monitor.csv rows.

    Rates and fractions are over the traffic window [0, ``traffic_window_s``], counting what
    completed in it; SLA attainment and latencies cover every issued request, the drain included.
    ``issued`` is how many requests the generator sent (default: the rows of ``requests``); the
    SLA denominator is the larger of the two, so requests the server never recorded are misses.
    ``batches=None`` (batches.csv unreadable) leaves the batch metrics ``None``.
    ``written`` holds the WRITTEN_KEYS its writer computed (the bound, the fit to the profile,
    the server's own time); they are copied, and the gap to the bound derived.
    """
    written = {key: (written or {}).get(key) for key in WRITTEN_KEYS}
    sla_attainment_bound = written["sla_attainment_bound"]
    window_s = float(traffic_window_s) if traffic_window_s is not None else math.nan
    window_s = window_s if math.isfinite(window_s) else math.nan
    status = _texts(requests, "status")
    ok = status == "ok"
    end_s = _numbers(requests, "end_s")
    in_window = ok & (end_s <= window_s)
    latency_s = completed_latencies_s(requests)
    met = _flags(requests, "sla_met") & ok
    received = len(requests)
    issued = max(received, int(issued)) if issued is not None else received
    latency = latency_summary(latency_s)
    output_tokens = float(np.nansum(_numbers(requests, "output_tokens")[in_window]))
    last_completion_s = float(np.nanmax(end_s[ok])) if ok.any() else math.nan
    ends = [last_completion_s, window_s]
    if batches is not None and len(batches):
        ends.append(float(np.nanmax(_numbers(batches, "end_s"))))
    run_time_s = max((e for e in ends if math.isfinite(e)), default=math.nan)
    sla_met = int(np.count_nonzero(met))
    names, counts = np.unique(status.astype(str), return_counts=True)
    books = server_books(dict(zip(names.tolist(), counts.tolist(), strict=True)), received,
                         issued)
    metrics: dict[str, float | int | None] = {
        "requests_issued": issued,
        "requests_received": received,
        "requests_lost": issued - received,
        "requests_ok": books["completed"],
        **{f"requests_{status}": books[status] for status in REQUEST_STATUSES[1:]},
        "sla_met_requests": sla_met,
        "sla_attainment": sla_met / issued if issued else None,
        "sla_attainment_bound": sla_attainment_bound,
        "sla_attainment_gap": (sla_attainment_bound - sla_met / issued
                               if sla_attainment_bound is not None and issued else None),
        **latency,
        "queue_wait_mean_s": _mean_or_none(_numbers(requests, "queue_wait_s")[ok]),
        "swap_wait_mean_s": _mean_or_none(_numbers(requests, "swap_wait_s")[ok]),
        "processing_mean_s": _mean_or_none(_numbers(requests, "processing_s")[ok]),
        "throughput_rps": _per_second(np.count_nonzero(in_window), window_s),
        "output_tokens_per_s": _per_second(output_tokens, window_s),
        "goodput_rps": _per_second(np.count_nonzero(met & in_window), window_s),
        "gpu_util_mean_pct": _gpu_util_mean_pct(monitor, window_s),
    }
    metrics.update(_batch_metrics(batches, window_s))
    metrics.update({
        "traffic_window_s": window_s if math.isfinite(window_s) else None,
        "drain_s": (max(0.0, last_completion_s - window_s)
                    if math.isfinite(last_completion_s) and math.isfinite(window_s) else None),
        "completed_in_drain": int(np.count_nonzero(ok & (end_s > window_s))),
        "run_time_s": run_time_s if math.isfinite(run_time_s) else None,
    })
    metrics.update(written)
    return {key: metrics[key] for key in METRIC_KEYS}


def _gpu_util_mean_pct(monitor: pd.DataFrame | None, window_s: float) -> float | None:
    """Mean NVML utilisation of the samples taken in the traffic window (0 <= t_s <= window_s;
    all samples when t_s or the window is unknown)."""
    if monitor is None:
        return None
    util_pct = _numbers(monitor, "gpu_util_pct")
    t_s = _numbers(monitor, "t_s")
    if math.isfinite(window_s) and np.isfinite(t_s).any():
        util_pct = util_pct[(t_s >= 0.0) & (t_s <= window_s)]
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
                   window_s: float) -> dict[str, float | int | None]:
    """GPU busy and swap fractions over the traffic window, swap count and time, batch count and
    mean size over the whole run."""
    if batches is None:
        return dict.fromkeys(("gpu_busy_fraction", "swap_fraction", "swaps", "swap_time_s",
                              "swap_mean_s", "batches", "batch_size_mean"))
    swapped = swapped_batches(batches)
    swap_s = np.nan_to_num(_numbers(batches, "swap_s"))
    start_s = _numbers(batches, "start_s")
    busy_s = _overlap_s(start_s, _numbers(batches, "end_s"), window_s)
    swapping_s = _overlap_s(start_s[swapped] - swap_s[swapped], start_s[swapped], window_s)
    return {
        "gpu_busy_fraction": busy_s / window_s if window_s > 0 else None,
        "swap_fraction": swapping_s / window_s if window_s > 0 else None,
        "swaps": int(np.count_nonzero(swapped)),
        "swap_time_s": float(np.sum(swap_s[swapped])),
        "swap_mean_s": float(np.mean(swap_s[swapped])) if swapped.any() else None,
        "batches": len(batches),
        "batch_size_mean": _mean_or_none(_numbers(batches, "batch_size")),
    }
