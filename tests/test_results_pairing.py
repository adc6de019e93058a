"""Comparing environments: runs labelled by cc_mode, paired across folders, never sim with real."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sincere.report import with_groups
from sincere.runsummary import run_cc_mode, summarise_runs
from sincere.tables import cc_comparison_table, cell_table, sim_vs_real_table
from tests.helpers_rundirs import SyntheticRun


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
    # Non-CC 0.09, 0.10, 0.11 (standard error 0.005774, t(0.975; 2) = 4.3027) over a constant
    # 0.04: (0.10 -+ 0.024841) / 0.04.
    assert row["ratio_noncc_over_cc"] == pytest.approx(2.5)
    assert row["ratio_ci_low"] == pytest.approx(1.87896, abs=1e-4)
    assert row["ratio_ci_high"] == pytest.approx(3.12104, abs=1e-4)


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
