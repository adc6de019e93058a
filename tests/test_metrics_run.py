"""One run's metrics (SPEC section 6) from synthetic run directories with hand-computed answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sincere.results.summary import summarise_run
from sincere.runs.metrics import run_metrics, swapped_batches
from tests.helpers_rundirs import SyntheticRun


def summary(run: SyntheticRun, root: Path) -> dict:
    """The row process_results computes for ``run``, read back from its written directory."""
    return summarise_run(run.write(root)).row


def test_percentiles_interpolate_linearly_between_completed_latencies(tmp_path: Path) -> None:
    run = SyntheticRun()
    run.add_completed([10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0])
    run.add_unrun("unserved", count=5)  # no latency: not in the percentiles
    row = summary(run, tmp_path)
    # Sorted 1..10: p50 at rank 4.5 -> 5.5; p90 at 8.1 -> 9.1; p99 at 8.91 -> 9.91.
    assert row["latency_mean_s"] == pytest.approx(5.5)
    assert row["latency_p50_s"] == pytest.approx(5.5)
    assert row["latency_p90_s"] == pytest.approx(9.1)
    assert row["latency_p99_s"] == pytest.approx(9.91)


def test_sla_attainment_counts_unserved_rejected_and_failed_as_misses(tmp_path: Path) -> None:
    run = SyntheticRun(sla_s=40.0)
    run.add_completed([10.0, 20.0, 40.0, 50.0])  # three within the SLA (40 s is within)
    run.add_unrun("unserved", count=2)
    run.add_unrun("rejected")
    run.add_unrun("failed")
    row = summary(run, tmp_path)
    assert row["requests_issued"] == 8
    assert (row["requests_ok"], row["requests_unserved"], row["requests_rejected"],
            row["requests_failed"]) == (4, 2, 1, 1)
    assert row["sla_met_requests"] == 3
    assert row["sla_attainment"] == pytest.approx(3 / 8)


def test_a_failed_request_that_ran_is_not_a_completion(tmp_path: Path) -> None:
    run = SyntheticRun(sla_s=40.0)
    run.add_completed([5.0, 6.0])
    run.requests[1]["status"] = "failed"  # its batch ran but the request failed
    row = summary(run, tmp_path)
    assert (row["requests_ok"], row["requests_failed"], row["sla_met_requests"]) == (1, 1, 1)
    assert row["latency_mean_s"] == pytest.approx(5.0)
    assert row["sla_attainment"] == pytest.approx(0.5)


def test_rates_count_what_completed_in_the_traffic_window(tmp_path: Path) -> None:
    # The traffic window is 60 s; the second batch ends at 70 s, in the drain.
    run = SyntheticRun(sla_s=40.0, duration_s=60.0, run_time_s=200.0, output_tokens=50)
    run.add_batch("llama3-8b", [0.0, 10.0, 20.0], start_s=30.0, processing_s=20.0)  # 50, 40, 30
    run.add_batch("llama3-8b", [55.0], start_s=60.0, processing_s=10.0)  # latency 15, ends 70
    run.add_unrun("unserved", arrival_s=59.0)
    row = summary(run, tmp_path)
    assert row["traffic_window_s"] == 60.0
    assert row["throughput_rps"] == pytest.approx(3 / 60)
    assert row["throughput_rps"] * row["traffic_window_s"] == pytest.approx(3)
    assert row["goodput_rps"] == pytest.approx(2 / 60)  # 40 and 30 s are within 40 s
    assert row["output_tokens_per_s"] == pytest.approx(3 * 50 / 60)
    assert (row["completed_in_drain"], row["drain_s"]) == (1, pytest.approx(10.0))
    assert row["run_time_s"] == pytest.approx(70.0)
    # SLA attainment and latency cover every issued request, the drain included.
    assert row["sla_attainment"] == pytest.approx(3 / 5)
    assert row["latency_mean_s"] == pytest.approx((50 + 40 + 30 + 15) / 4)
    assert row["queue_wait_mean_s"] == pytest.approx((30 + 20 + 10 + 5) / 4)


def test_busy_and_swap_time_are_cut_at_the_end_of_the_window(tmp_path: Path) -> None:
    run = SyntheticRun(duration_s=50.0)
    run.add_batch("gemma-7b", [0.0], start_s=10.0, processing_s=10.0, swap_s=10.0)  # 0-20
    run.add_batch("llama3-8b", [30.0], start_s=45.0, processing_s=20.0, swap_s=10.0,
                  swap_from="gemma-7b")  # swap 35-45, inference 45-65: 5 s in the window
    row = summary(run, tmp_path)
    assert row["gpu_busy_fraction"] == pytest.approx((10 + 5) / 50)
    assert row["swap_fraction"] == pytest.approx((10 + 10) / 50)
    assert (row["swaps"], row["swap_time_s"]) == (2, pytest.approx(20.0))  # the whole run
    assert row["completed_in_drain"] == 1


def test_an_older_run_json_without_a_window_ends_it_at_the_last_arrival(tmp_path: Path) -> None:
    # No traffic_window_s and no duration: the window is the one definition's, the traffic's
    # last arrival (sincere.runs.window), not the run time (80 s) that includes the drain.
    run = SyntheticRun(duration_s=float("nan"), run_time_s=80.0)
    run.add_batch("llama3-8b", [3.0], start_s=3.0, processing_s=5.0)  # ends at 8 s
    run.add_batch("llama3-8b", [12.0], start_s=12.0, processing_s=4.0)  # ends at 16 s
    record = summarise_run(run.write(tmp_path))
    assert record.row["traffic_window_s"] == 12.0
    assert record.row["throughput_rps"] == pytest.approx(1 / 12.0)  # one ended by 12 s
    assert record.row["drain_s"] == pytest.approx(4.0)
    assert any("no traffic window" in w and "last arrival" in w for w in record.warnings)


def test_lost_requests_from_the_accounting_count_as_misses(tmp_path: Path) -> None:
    run = SyntheticRun(sla_s=40.0, issued=10)  # the generator sent 10; the server logged 4
    run.add_completed([1.0, 2.0, 3.0, 4.0])
    row = summary(run, tmp_path)
    assert (row["requests_issued"], row["requests_received"], row["requests_lost"]) == (10, 4, 6)
    assert row["sla_attainment"] == pytest.approx(0.4)


def test_issued_comes_from_client_csv_when_the_accounting_has_none(tmp_path: Path) -> None:
    run = SyntheticRun(engine="hf", write_issued=False, client_rows=5)
    run.add_completed([1.0, 2.0, 3.0, 4.0])
    row = summary(run, tmp_path)
    assert row["requests_issued"] == 5
    assert row["sla_attainment"] == pytest.approx(4 / 5)


def test_gpu_utilisation_is_the_mean_of_the_samples_within_the_window(tmp_path: Path) -> None:
    # Samples at t = 0, 0.5, 1.0, 1.5 s; the traffic lasts 1 s, so the last one is after it.
    run = SyntheticRun(engine="hf", duration_s=1.0, run_time_s=1.5,
                       gpu_util_pct=[20.0, 40.0, 60.0, 100.0])
    run.add_batch("llama3-8b", [0.0], start_s=0.0, processing_s=0.25)
    row = summary(run, tmp_path)
    assert row["gpu_util_mean_pct"] == pytest.approx(40.0)
    assert row["gpu_busy_fraction"] == pytest.approx(0.25)


def test_busy_and_swap_fractions_come_from_the_batches(tmp_path: Path) -> None:
    run = SyntheticRun(run_time_s=100.0)
    run.add_batch("gemma-7b", [0.0], start_s=5.0, processing_s=10.0, swap_s=5.0)  # first load
    run.add_batch("gemma-7b", [20.0], start_s=20.0, processing_s=10.0)
    run.add_batch("llama3-8b", [30.0], start_s=37.0, processing_s=20.0, swap_s=7.0,
                  swap_from="gemma-7b")
    row = summary(run, tmp_path)
    assert row["gpu_busy_fraction"] == pytest.approx(40 / 100)
    assert (row["swaps"], row["swap_time_s"]) == (2, pytest.approx(12.0))
    assert row["swap_fraction"] == pytest.approx(12 / 100)
    assert row["gpu_util_mean_pct"] is None  # no monitor.csv: a simulated run has no NVML


def test_swaps_of_a_real_run_ignore_the_dispatch_overhead_of_resident_batches() -> None:
    # The real server records swap_s = start - dispatch, a few microseconds without a swap,
    # and leaves swap_from empty for the first load. Batches listed out of start order.
    batches = pd.DataFrame({
        "model": ["a", "a", "b", "a", "a"],
        "swap_from": ["", "", "a", "b", ""],
        "swap_s": [2.0, 1e-5, 3.0, 2.5, 2e-5],
        "start_s": [2.0, 10.0, 20.0, 30.0, 40.0],
        "end_s": [5.0, 12.0, 22.0, 32.0, 42.0],
        "processing_s": [3.0, 2.0, 2.0, 2.0, 2.0],
        "batch_size": [1, 1, 1, 1, 1],
    }).iloc[[3, 0, 4, 1, 2]]
    assert list(swapped_batches(batches)) == [True, True, False, False, True]
    result = run_metrics(pd.DataFrame({"status": []}), batches, 100.0)
    assert (result["swaps"], result["swap_time_s"]) == (3, pytest.approx(7.5))


def test_a_run_with_nothing_completed_has_no_latency_and_zero_attainment(tmp_path: Path) -> None:
    run = SyntheticRun()
    run.add_unrun("unserved", count=3)
    row = summary(run, tmp_path)
    assert row["latency_p50_s"] is None and row["latency_mean_s"] is None
    assert row["sla_attainment"] == 0.0
    assert row["throughput_rps"] == 0.0
