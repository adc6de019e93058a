"""Comparing environments: runs labelled by cc_mode, paired across folders, never sim with real."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sincere.results.report import with_groups
from sincere.results.summary import run_cc_mode, summarise_runs
from sincere.results.tables import (
    cc_comparison_table,
    cell_table,
    decomposition_table,
    sim_vs_real_table,
)
from tests.helpers_rundirs import SyntheticRun, grid_run


def completing(count: int, **params) -> SyntheticRun:
    """A 100 s run in which ``count`` requests complete (one a second, 0.5 s each)."""
    run = SyntheticRun(run_time_s=100.0, **params)
    for i in range(count):
        run.add_batch("llama3-8b", [float(i)], start_s=float(i), processing_s=0.5)
    return run


def runs_table(*roots: Path) -> pd.DataFrame:
    records, _ = summarise_runs(roots, workers=1)
    return pd.DataFrame([r.row for r in records])


def throughput(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["metric"] == "throughput_rps"]


def test_measured_runs_from_two_folders_pair_by_cc_mode(tmp_path: Path) -> None:
    for repeat, count in enumerate([9, 10, 11]):
        completing(count, run_id=f"cell__rep{repeat}", repeat=repeat, engine="hf",
                   cc_mode="off").write(tmp_path / "ordinary_vm")
        completing(4, run_id=f"cell__rep{repeat}", repeat=repeat, engine="hf",
                   cc_mode="on").write(tmp_path / "confidential_vm")
    completing(5, run_id="other_rate__rep0", mean_rps=8.0, engine="hf",
               cc_mode="off").write(tmp_path / "ordinary_vm")  # no CC partner
    cc = throughput(cc_comparison_table(runs_table(tmp_path / "ordinary_vm",
                                                   tmp_path / "confidential_vm")))
    assert len(cc) == 1
    row = cc.iloc[0]
    assert (row["engine"], row["mean_rps"], row["runs_noncc"], row["runs_cc"]) == ("hf", 4.0, 3,
                                                                                   3)
    assert (row["noncc_mean"], row["cc_mean"]) == (pytest.approx(0.10), pytest.approx(0.04))
    # Repeat by repeat 0.09, 0.10, 0.11 over 0.04: ratios 2.25, 2.5, 2.75; their log mean
    # 0.912939 (geometric mean 2.491639) with standard error 0.057953, t(0.975; 2) = 4.302653:
    # exp(0.912939 -+ 0.249353).
    assert row["pairs"] == 3 and row["interval"] == "paired over 3 repeats"
    assert row["ratio_noncc_over_cc"] == pytest.approx(2.491639, abs=1e-6)
    assert row["ratio_ci_low"] == pytest.approx(1.941750, abs=1e-5)
    assert row["ratio_ci_high"] == pytest.approx(3.197252, abs=1e-5)


def test_a_cc_ratio_is_paired_by_repeat_so_shared_arrivals_cancel(tmp_path: Path) -> None:
    # Each repeat's arrivals move both sides alike (9, 10, 11 completions, CC half of them):
    # per repeat the ratio is exactly 2, which unpaired means would blur.
    for repeat, count in enumerate([8, 10, 12]):
        completing(count, run_id=f"cell__rep{repeat}", repeat=repeat, engine="hf",
                   cc_mode="off").write(tmp_path / "vm")
        completing(count // 2, run_id=f"cell__rep{repeat}", repeat=repeat, engine="hf",
                   cc_mode="on").write(tmp_path / "cvm")
    row = throughput(cc_comparison_table(runs_table(tmp_path / "vm", tmp_path / "cvm"))).iloc[0]
    assert row["ratio_noncc_over_cc"] == pytest.approx(2.0)
    assert (row["ratio_ci_low"], row["ratio_ci_high"]) == (pytest.approx(2.0), pytest.approx(2.0))


def test_one_repeat_per_side_gives_a_ratio_and_says_there_is_no_interval(tmp_path: Path) -> None:
    completing(10, run_id="cell__rep0", engine="hf", cc_mode="off").write(tmp_path / "vm")
    completing(5, run_id="cell__rep0", engine="hf", cc_mode="on").write(tmp_path / "cvm")
    row = throughput(cc_comparison_table(runs_table(tmp_path / "vm", tmp_path / "cvm"))).iloc[0]
    assert row["ratio_noncc_over_cc"] == pytest.approx(2.0)
    assert pd.isna(row["ratio_ci_low"]) and pd.isna(row["ratio_ci_high"])
    assert row["interval"] == "one repeat per side: no interval"


def test_runs_that_differ_in_any_parameter_are_not_one_cell(tmp_path: Path) -> None:
    completing(10, run_id="a__rep0").write(tmp_path / "one")
    other = completing(10, run_id="a__rep1", repeat=1)
    other.max_queue = 200  # every readable column equal, one parameter not
    other.write(tmp_path / "two")
    failed = completing(4, run_id="a__rep2", repeat=2, status="failed")
    failed.write(tmp_path / "one")
    cells = cell_table(runs_table(tmp_path / "one", tmp_path / "two"), ["throughput_rps"])
    assert sorted(cells["runs"]) == [1, 1]
    with_failed = cells[cells["runs_failed"] == 1].iloc[0]
    assert with_failed["failed_runs"] == "a__rep2"
    assert with_failed["throughput_rps_mean"] == pytest.approx(0.10)  # the failed run left out


def test_simulated_runs_are_never_paired_with_measured_ones(tmp_path: Path) -> None:
    completing(10, run_id="real_off", engine="hf", cc_mode="off").write(tmp_path / "vm")
    completing(8, run_id="real_on", engine="hf", cc_mode="on").write(tmp_path / "cvm")
    completing(10, run_id="sim_on", engine="sim", cc_mode="on",
               profiles_name="h100-orig_cc").write(tmp_path / "sim")
    runs = runs_table(tmp_path / "vm", tmp_path / "cvm", tmp_path / "sim")
    cc = throughput(cc_comparison_table(runs))
    assert list(cc["engine"]) == ["hf"]  # the simulated CC run has no simulated partner
    assert cc.iloc[0]["ratio_noncc_over_cc"] == pytest.approx(0.10 / 0.08)
    sim_real = throughput(sim_vs_real_table(runs))
    assert len(sim_real) == 1
    row = sim_real.iloc[0]
    assert (row["cc_mode"], row["simulated_platform"], row["measured_platform"]) == (
        "on", "h100-orig", "NVIDIA H100")
    assert (row["simulated_mean"], row["measured_mean"]) == (pytest.approx(0.10),
                                                             pytest.approx(0.08))
    assert row["relative_error"] == pytest.approx(0.25)
    labels = dict(zip(runs["run_id"], with_groups(runs, show_platform=False)["group"],
                      strict=True))
    assert labels == {"real_off": "measured, CC off", "real_on": "measured, CC on",
                      "sim_on": "simulated, CC on"}


def test_simulated_cc_and_noncc_profile_sets_of_one_device_pair(tmp_path: Path) -> None:
    completing(10, run_id="a", profiles_name="h100-orig_noncc", cc_mode="off").write(
        tmp_path / "noncc")
    completing(5, run_id="a", profiles_name="h100-orig_cc", cc_mode="on").write(tmp_path / "cc")
    completing(20, run_id="a", profiles_name="h100_noncc", cc_mode="off").write(
        tmp_path / "other")
    runs = runs_table(tmp_path / "noncc", tmp_path / "cc", tmp_path / "other")
    cells = cell_table(runs, ["throughput_rps"]).set_index(["platform", "cc_mode"])
    assert cells["runs"].to_dict() == {("h100", "off"): 1, ("h100-orig", "off"): 1,
                                       ("h100-orig", "on"): 1}  # profile families never merge
    cc = throughput(cc_comparison_table(runs))
    assert list(zip(cc["engine"], cc["platform"], strict=True)) == [("sim", "h100-orig")]
    assert cc.iloc[0]["ratio_noncc_over_cc"] == pytest.approx(2.0)
    groups = with_groups(runs, show_platform=True).set_index("results_dir")["group"]
    assert groups[str((tmp_path / "cc").resolve())] == "simulated (h100-orig), CC on"


@pytest.mark.parametrize(("engine", "environment_mode", "profile_mode", "expected"), [
    ("hf", "on", "off", "on"),  # a real run: what the VM reported, not the profile's mode
    ("hf", "unknown", "on", "unknown"),
    ("sim", "off", "on", "on"),  # a simulated run: the profile it replays
    ("sim", None, None, "unknown"),
])
def test_cc_mode_of_a_run(engine: str, environment_mode: str | None, profile_mode: str | None,
                          expected: str) -> None:
    info = {"params": {"engine": engine, "profiles": {"cc_mode": profile_mode}},
            "environment": {"cc_mode": environment_mode}}
    assert run_cc_mode(info) == expected


def test_the_simulated_vs_measured_error_is_decomposed(tmp_path: Path) -> None:
    # The same grid point both ways; the measured run's batches and swaps take 1.5 times as
    # long (grid_run's slowdown), and it reports its fit to the profile and its own time.
    grid_run("BestBatch+Timer", 4.0, 0, "sim", "off").write(tmp_path / "sim")
    real = grid_run("BestBatch+Timer", 4.0, 0, "hf", "off", slowdown=1.5)
    real.written = {"processing_vs_profile": 1.5, "swap_vs_profile": 1.5,
                    "server_time_per_batch_s": 0.004}
    real.write(tmp_path / "real")
    decomposition = decomposition_table(sim_vs_real_table(runs_table(tmp_path / "sim",
                                                                     tmp_path / "real")))
    assert len(decomposition) == 1
    row = decomposition.iloc[0]
    assert row["processing_mean_error_s"] == pytest.approx(0.8 - 1.2)
    assert row["swap_mean_simulated_s"] == pytest.approx(0.5)
    assert row["swap_mean_measured_s"] == pytest.approx(0.75)
    parts = (row["queue_wait_mean_error_s"] + row["swap_wait_mean_error_s"]
             + row["processing_mean_error_s"])
    assert parts == pytest.approx(row["latency_mean_simulated_s"]
                                  - row["latency_mean_measured_s"])
    assert (row["measured_processing_vs_profile"], row["measured_server_time_per_batch_s"]) == (
        1.5, 0.004)


def test_the_measured_run_is_placed_in_the_range_of_the_simulated_replays(tmp_path: Path) -> None:
    sim_dir = grid_run("BestBatch+Timer", 4.0, 0, "sim", "off").write(tmp_path / "sim")
    grid_run("BestBatch+Timer", 4.0, 0, "hf", "off", slowdown=1.5).write(tmp_path / "real")
    plain = sim_vs_real_table(runs_table(tmp_path / "sim", tmp_path / "real"))
    assert plain["replays"].isna().all() and plain["measured_within_replays"].isna().all()

    # The simulator's replays of the same arrivals (sincere.simulation.simulator.replay_spread): SLA
    # attainment between 0.2 and 0.99, mean latency between 0.1 and 0.2 s.
    info = json.loads((sim_dir / "run.json").read_text())
    info["replays"] = {"runs": 20, "range_percentiles": [5.0, 95.0], "metrics": {
        "sla_attainment": {"mean": 0.6, "low": 0.2, "high": 0.99},
        "latency_mean_s": {"mean": 0.15, "low": 0.1, "high": 0.2}}}
    (sim_dir / "run.json").write_text(json.dumps(info))
    table = sim_vs_real_table(runs_table(tmp_path / "sim", tmp_path / "real")).set_index("metric")
    sla, latency = table.loc["sla_attainment"], table.loc["latency_mean_s"]
    assert (sla["replays"], sla["replays_low"], sla["replays_high"]) == (20, 0.2, 0.99)
    assert sla["measured_within_replays"] == bool(0.2 <= sla["measured_mean"] <= 0.99)
    assert latency["measured_mean"] > 0.2 and latency["measured_within_replays"] is False
    assert pd.isna(table.loc["throughput_rps", "replays"])  # no spread was given for it
    row = decomposition_table(table.reset_index()).iloc[0]
    assert (row["latency_mean_replays_low"], row["latency_mean_replays_high"]) == (0.1, 0.2)
    assert not row["latency_mean_measured_within_replays"]


def _pair_side(cc_mode: str, seeds_and_values: list[tuple[int, float]]) -> list[dict]:
    """Runs of one grid cell on one CC side, as summary_runs rows with a seed each."""
    cell = {"engine": "hf", "platform": "NVIDIA H100", "strategy": "BestBatch",
            "pattern": "gamma", "mean_rps": 4.0, "sla_s": 40.0, "max_new_tokens": 50.0,
            "duration_s": 100.0, "cc_pair_id": "cell", "cell_id": f"cell-{cc_mode}",
            "cc_mode": cc_mode, "status": "complete"}
    return [{**cell, "run_id": f"{cc_mode}{i}", "seed": seed, "throughput_rps": value}
            for i, (seed, value) in enumerate(seeds_and_values)]


def test_only_the_seeds_both_sides_ran_pair_each_once() -> None:
    # Seed 1 ran twice without CC (the first run pairs), seed 2 only without CC, seed 3 only
    # with it: seeds 0 and 1 pair, with ratios 4 / 1 = 4 and 6 / 3 = 2, geometric mean
    # sqrt(8). The means are over every run of each side.
    runs = pd.DataFrame(_pair_side("off", [(0, 4.0), (1, 6.0), (1, 100.0), (2, 50.0)])
                        + _pair_side("on", [(1, 3.0), (0, 1.0), (3, 7.0)]))
    row = cc_comparison_table(runs, ["throughput_rps"]).iloc[0]
    assert (row["pairs"], row["interval"]) == (2, "paired over 2 repeats")
    assert row["ratio_noncc_over_cc"] == pytest.approx(8 ** 0.5)
    assert (row["noncc_mean"], row["cc_mean"]) == (pytest.approx(40.0), pytest.approx(11 / 3))
    assert (row["runs_noncc"], row["runs_cc"]) == (4, 3)


def test_without_a_shared_seed_the_means_get_fiellers_interval() -> None:
    # The hand-worked Fieller case of test_metrics_intervals: 9, 11 over 18, 22.
    runs = pd.DataFrame(_pair_side("off", [(0, 9.0), (1, 11.0)])
                        + _pair_side("on", [(5, 18.0), (6, 22.0)]))
    row = cc_comparison_table(runs, ["throughput_rps"]).iloc[0]
    assert (row["pairs"], row["interval"]) == (
        0, "unpaired (no seed on both sides): Fieller's interval")
    assert row["ratio_noncc_over_cc"] == pytest.approx(0.5)
    assert (row["ratio_ci_low"], row["ratio_ci_high"]) == (pytest.approx(0.25792, abs=1e-4),
                                                           pytest.approx(0.96926, abs=1e-4))
