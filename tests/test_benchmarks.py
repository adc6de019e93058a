"""The swap benchmark and the GPU profiling, run on the CPU (tiny models), and the GPU
profiling's refusal without a GPU; the GPU check has tests of its own (test_gpu_check.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from sincere.assets.architectures import HUB_IDS
from sincere.profiles.profile_set import load_profiles
from tests.helpers_rundirs import grid_run

REPO_ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_swap_prints_both_paths_and_their_ratio_for_each_model(
        tiny_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = benchmark("bench_swap").main(["--models-dir", str(tiny_models), "--rounds", "2",
                                           "--warmup", "0"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line.split() for line in lines if line.split()[:1] == ["model"])
    assert header[-1] == "disk/cache"
    assert {"disk_mean_s", "host_cache_mean_s", "disk_unload_mean_s",
            "host_cache_unload_mean_s"} <= set(header)
    table = {line.split()[0]: dict(zip(header, line.split(), strict=True))
             for line in lines if line.split()[:1] and line.split()[0] in HUB_IDS}
    assert sorted(table) == sorted(HUB_IDS)  # every model timed on both paths (the figures:
    for row in table.values():               # below, on fake engines)
        assert all(float(row[c]) > 0 for c in ("disk_mean_s", "host_cache_mean_s", "disk/cache"))


class TimedLoads:
    """An engine whose loads and unloads take preset seconds, as it reports them; its loads
    come from ``loads_from`` (by default the host cache when it has one, else the disk)."""

    def __init__(self, name: str, host_cache: bool, load_s: list[float],
                 unload_s: list[float], calls: list[str], loads_from: str = "") -> None:
        self.name, self.host_cache, self.calls = name, host_cache, calls
        self.load_s, self.unload_s = iter(load_s), iter(unload_s)
        self.loads_from = loads_from or ("host_cache" if host_cache else "disk")

    def prefetch(self, alias: str) -> None:
        self.calls.append(f"{self.name} prefetch")

    def load(self, alias: str) -> SimpleNamespace:
        self.calls.append(f"{self.name} load")
        return SimpleNamespace(path=self.loads_from, seconds=next(self.load_s), size_gb=0.5)

    def unload(self) -> float:
        return next(self.unload_s)

    def evict(self, alias: str) -> None:
        self.calls.append(f"{self.name} evict")


def test_bench_swap_interleaves_the_paths_and_leaves_out_the_warm_up() -> None:
    bench = benchmark("bench_swap")
    calls: list[str] = []
    engines = {"disk": TimedLoads("disk", False, [9.0, 0.6, 0.7], [0.05] * 3, calls),
               "host_cache": TimedLoads("cache", True, [5.0, 0.2, 0.1], [0.01] * 3, calls)}
    seconds, size_gb = bench.time_paths(engines, "m", rounds=2, warmup=1)
    # One warm-up round (9.0 and 5.0 s) left out, then the paths take turns round by round.
    assert seconds == {"disk": [0.6, 0.7], "disk_unload": [0.05, 0.05],
                       "host_cache": [0.2, 0.1], "host_cache_unload": [0.01, 0.01]}
    assert calls == ["cache prefetch", *["disk load", "cache load"] * 3, "disk evict",
                     "cache evict"]
    # Means 0.65 and 0.15 s, each with a sample std of sqrt(2 * 0.05^2 / 1) = 0.0707 s; the
    # disk path takes 0.65 / 0.15 = 4.33 times the cache's.
    row = bench.table_row("m", size_gb, seconds)
    assert row == {"model": "m", "size_gb": 0.5, "disk_mean_s": 0.65, "disk_std_s": 0.0707,
                   "disk_unload_mean_s": 0.05, "disk_unload_std_s": 0.0,
                   "host_cache_mean_s": 0.15, "host_cache_std_s": 0.0707,
                   "host_cache_unload_mean_s": 0.01, "host_cache_unload_std_s": 0.0,
                   "disk/cache": 4.33}
    # A cache that loaded from disk would time the wrong path: refused, by name.
    wrong = {"host_cache": TimedLoads("cache", True, [1.0], [0.0], [], loads_from="disk")}
    with pytest.raises(RuntimeError, match="m: host_cache loaded from disk"):
        bench.time_paths(wrong, "m", rounds=1, warmup=0)


def test_gpu_profile_check_dry_run_writes_profiles_the_simulator_reads(
        tiny_models: Path, tmp_path: Path) -> None:
    status = benchmark("gpu_profile_check").main([
        "--device", "cpu", "--models-dir", str(tiny_models), "--profiles-dir", str(tmp_path),
        "--batch-sizes", "2", "1", "--iterations", "1", "--warmup", "0", "--max-new-tokens",
        "2", "--prompts", "16", "--monitor-period-s", "0.1"])
    assert status == 0
    assert len(list(tmp_path.glob("best_batch_cpu_noncc_*.csv"))) == 1
    profiles = load_profiles("cpu_noncc", tmp_path)
    assert sorted(profiles.models) == sorted(HUB_IDS)
    assert {profiles[m].largest_batch(2) for m in HUB_IDS} == {2}


@no_gpu
def test_gpu_profile_check_refuses_without_a_gpu(tiny_models: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    status = benchmark("gpu_profile_check").main(["--models-dir", str(tiny_models),
                                                  "--profiles-dir", str(tmp_path)])
    assert status == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_what_it_buys_compares_the_profile_sets(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Each profile set meets the very same arrivals, and the table's last column is the fast
    set's SLA attainment over the original study's, as written to --out."""
    import pandas as pd

    sets = ["h100-orig_noncc", "h100-orig_cc", "h100_noncc", "h100-fast_noncc"]
    status = benchmark("what_it_buys").main([
        "--patterns", "gamma", "--repeats", "1", "--duration-s", "120", "--workers", "1",
        "--strategies", "BestBatch+Timer", "--out", str(tmp_path / "runs.csv")])
    out = capsys.readouterr().out
    assert status == 0
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("profiles")
    assert sorted(runs.index) == sorted(sets)
    assert runs["requests"].nunique() == 1 and runs["requests"].iloc[0] > 0  # one schedule
    line = next(line.split() for line in out.splitlines()
                if line.startswith("BestBatch+Timer") and "%" in line)
    attainment = runs["sla_attainment"]
    assert line[2:2 + 2 * len(sets):2] == [f"{attainment[name]:.1%}" for name in sets]
    fast_over_original = attainment["h100-fast_noncc"] / attainment["h100-orig_noncc"]
    assert line[-1] == f"{fast_over_original:.1f}x"


def test_machine_drift_windows_are_full_ones_and_medians() -> None:
    window_medians = benchmark("bench_machine_drift").window_medians
    times = [(0.0, 1.0), (0.5, 3.0), (0.9, 2.0), (1.2, 5.0), (1.8, 4.0), (2.1, 9.0)]
    # 2.3 s of timing fill two 1-s windows; the batch started in the third is left out.
    assert window_medians(times, 1.0, 2.3) == [2.0, 4.5]
    assert window_medians(times[:2], 1.0, 0.6) == [2.0]  # shorter than a window: the first


def test_bench_machine_drift_times_the_best_batch_against_its_first_window(
        tiny_models: Path, server_workloads: Path, tiny_profile,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import SERVER_TEST_NEW_TOKENS

    def drifting_clock() -> Iterator[float]:
        """The batches' clock: 0.25-s batches in the first second, 0.5-s ones in the second,
        0.125-s ones in the third (the real engine runs each batch; this clock times it)."""
        now_s = 0.0
        yield now_s  # the start
        for seconds, count in ((0.25, 4), (0.5, 2), (0.125, 8)):
            for _ in range(count):
                yield now_s  # the batch begins
                now_s += seconds
                yield now_s  # and ends
        while True:
            yield now_s  # 3 s: no batch begins, and the timing took 3 s

    ticks = drifting_clock()
    status = benchmark("bench_machine_drift").main([
        "--models-dir", str(tiny_models), "--workloads-dir", str(server_workloads),
        "--profiles", "cpu_noncc",
        "--profiles-dir", str(Path(tiny_profile.batch_file).parent),
        "--max-new-tokens", str(SERVER_TEST_NEW_TOKENS), "--minutes", "0.05",
        "--window-s", "1"], clock=lambda: next(ticks))
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    best = tiny_profile["llama3-8b"].best_batch(SERVER_TEST_NEW_TOKENS)
    assert lines[0].startswith(f"llama3-8b: batch of {best} timed back to back")
    # Medians 0.25, 0.5 and 0.125 s: 1, 2 and 0.5 times the first window's; 0.5 / 0.125 = 4.
    assert [line.split() for line in lines[2:5]] == [["0s", "0.2500", "1.000"],
                                                     ["1s", "0.5000", "2.000"],
                                                     ["2s", "0.1250", "0.500"]]
    assert lines[5] == "14 batches; spread (slowest window / fastest): 4.000"


def test_bench_sim_spread_replays_one_cells_arrivals_with_each_spread(
        tiny_models: Path, server_workloads: Path, tiny_profile,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import SERVER_TEST_NEW_TOKENS

    bench = benchmark("bench_sim_spread")
    status = bench.main([
        "--models-dir", str(tiny_models), "--workloads-dir", str(server_workloads),
        "--profiles", "cpu_noncc", "--profiles-dir", str(Path(tiny_profile.batch_file).parent),
        "--max-new-tokens", str(SERVER_TEST_NEW_TOKENS), "--strategies", "Immediate",
        "BestBatch", "--seeds", "3", "--relative-sds", "0.05", "0.2", "--duration-s", "10"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert "each cell replayed with 3 jitter seeds" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [(s, sd) for s in ("Immediate", "BestBatch")
                                            for sd in ("profile's", "0.05", "0.2")]


def test_bench_sim_spread_puts_its_spread_in_every_length_term() -> None:
    """The spread put in place is the one drawn from: model a's length term (relative sd 0.05)
    gets 0.2, model b, which has none, is left without. (A profile measured on this machine
    has a length term only where its noise let one be fitted, so it is built here.)"""
    import dataclasses

    from sincere.profiles.length_term import LengthFit
    from sincere.profiles.profile_set import ProfileSet
    from tests.profile_fixtures import model

    with_length = model("a", 10.0, 2.0)
    curve = dataclasses.replace(with_length.curves[50],
                                length=LengthFit((1, 4, 8), (0.1, 0.2, 0.5), 1e-4, 0.05, 9))
    profiles = ProfileSet({"a": dataclasses.replace(with_length, curves={50: curve}),
                           "b": model("b", 20.0, 3.0)}, "test", "off", "loading.csv",
                          "batch.csv")
    varied = benchmark("bench_sim_spread").with_relative_sd(profiles, 0.2)
    assert varied["a"].curves[50].length.relative_sd == 0.2
    assert varied["a"].curves[50].length.per_token_s == 1e-4  # the rest of the fit kept
    assert varied["b"].curves[50].length is None
    assert profiles["a"].curves[50].length.relative_sd == 0.05  # the original left as it was


def test_bench_sim_spread_replays_are_other_draws_of_the_same_arrivals() -> None:
    """Two requests of model a, 100 s apart, each served at once (Immediate) with an SLA of
    5 s. The first waits for a's load (10 s) and runs alone (P(1) = 2 s): latency 12 s, late;
    the second finds a loaded: 2 s, in time. Attainment 1/2, mean latency 7 s, whatever the
    jitter seed when nothing varies; with a load time that varies (sd 3 s), every seed
    draws another first latency."""
    import numpy as np

    from sincere.profiles.profile_set import ProfileSet
    from sincere.traffic.schedule import Schedule
    from tests.profile_fixtures import model, two_models

    bench = benchmark("bench_sim_spread")
    schedule = Schedule(np.array([0.0, 100.0]), ("a", "a"), ("", ""), (None, None), {})
    cfg = SimpleNamespace(SLA_S=5.0, MAX_NEW_TOKENS=50, DURATION_S=120.0)
    assert bench.replay(schedule, None, "Immediate", two_models(), cfg, 3) == [(0.5, 7.0)] * 3
    varied = ProfileSet({"a": model("a", 10.0, 2.0, load_std_s=3.0)}, "test", "off",
                        "loading.csv", "batch.csv")
    figures = bench.replay(schedule, None, "Immediate", varied, cfg, 3)
    assert [sla for sla, _ in figures] == [0.5] * 3
    assert len({latency for _, latency in figures}) == 3


def _cc_grid(root: Path, repeats: int) -> None:
    """A simulated cell run ``repeats`` times with CC off (``root/off``) and on (``root/on``)."""
    for repeat in range(repeats):
        for mode in ("off", "on"):
            grid_run("BestBatch+Timer", 4.0, repeat, "sim", mode,
                     profiles_name=f"h100-test_{'cc' if mode == 'on' else 'noncc'}").write(
                root / mode)


def test_bench_process_results_takes_the_same_runs_from_every_folder(tmp_path: Path) -> None:
    _cc_grid(tmp_path, 6)
    folders = benchmark("bench_process_results").run_subsets(
        [tmp_path / "off", tmp_path / "on"], 6, tmp_path / "subsets")
    names = [sorted(p.name for p in folder.iterdir()) for folder in folders]
    assert names[0] == names[1] == [f"bestbatch+timer__gamma__rate4__sla40__rep{r}"
                                    for r in (0, 2, 4)]  # evenly spaced, so CC pairs remain
    assert (folders[1] / names[1][0]).resolve() == (tmp_path / "on" / names[1][0]).resolve()


@pytest.mark.slow
def test_bench_process_results_times_both_checkouts_on_the_same_subset_of_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _cc_grid(tmp_path, 3)  # three runs a mode: a subset of 4 takes two of each
    status = benchmark("bench_process_results").main([
        str(tmp_path / "off"), str(tmp_path / "on"), "--sizes", "4", "--rounds", "1",
        "--baseline", str(REPO_ROOT)])
    assert status == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    runs, this_wall, _, baseline_wall, _, ratio = (float(v) for v in row[:6])
    assert runs == 4
    assert ratio == pytest.approx(baseline_wall / this_wall, abs=0.01)
