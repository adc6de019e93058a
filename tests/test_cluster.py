"""run_experiments.py on a Ray cluster, for real: a Ray cluster of three local nodes (one Ray
instance for the module), the tiny models, real servers and generators on the nodes.

The two worker nodes are CPU machines labelled as a CC-off and a CC-on node, as
``python -m sincere.grid.node --resources --cc-mode ...`` labels them; each has two run slots.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from sincere.grid.children import ROOT, script_argv
from sincere.grid.node import node_resources, pack_run, unpack_run
from sincere.grid.points import GridPoint, GridRun, grid_runs
from sincere.grid.runner import RunSpec

RUN_FILES = ["batches.csv", "client.csv", "generator.log", "monitor.csv", "requests.csv",
             "run.json", "schedule.csv", "server.log"]


@dataclass
class LocalCluster:
    cluster: object  # ray.cluster_utils.Cluster
    nodes: dict[str, object]  # CC mode -> its worker node

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self, cc_mode: str) -> None:
        """A worker node with two run slots, labelled with ``cc_mode``."""
        self.nodes[cc_mode] = self.cluster.add_node(
            num_cpus=1, resources=node_resources(2, cc_mode, detected="unknown"))
        self.cluster.wait_for_nodes()

    def node_running(self, process: psutil.Process) -> str:
        """The CC mode of the node whose raylet ``process`` descends from ("" if none)."""
        ancestors = {p.pid for p in process.parents()}
        for mode, node in self.nodes.items():
            if node.all_processes["raylet"][0].process.pid in ancestors:
                return mode
        return ""

    def servers(self) -> list[psutil.Process]:
        """The experiment servers running on this cluster's nodes. A server's own child, forked
        to start its engine's process, carries the server's command line until it execs: it is
        not a server."""
        found = []
        for node in self.nodes.values():
            raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
            for child in raylet.children(recursive=True):
                try:
                    if "api_scheduler_experiments.py" in " ".join(child.cmdline()):
                        found.append(child)
                except psutil.NoSuchProcess:
                    pass
        pids = {p.pid for p in found}
        kept = []
        for server in found:
            try:
                if server.ppid() not in pids:
                    kept.append(server)
            except psutil.NoSuchProcess:
                pass
        return kept


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    from ray.cluster_utils import Cluster  # a Ray instance of local nodes (Ray's own tests')

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    handle = LocalCluster(cluster, {})
    try:
        for mode in ("off", "on"):
            handle.add(mode)
        yield handle
    finally:
        cluster.shutdown()


def grid_argv(results: Path, address: str, models: Path, workloads: Path, tiny_profile,
              strategies: list[str], cc_modes: list[str], duration_s: float = 2.0) -> list[str]:
    return script_argv("run_experiments.py", {
        "RESULTS_DIR": results, "MODELS_DIR": models, "WORKLOADS_DIR": workloads,
        "PROFILES": "cpu_noncc", "PROFILES_DIR": Path(tiny_profile.loading_file).parent,
        "STRATEGIES": strategies, "PATTERNS": ["constant"], "MEANS": [3.0], "SLAS": [5.0],
        "DURATION_S": duration_s, "DRAIN_TIMEOUT_S": 20.0, "MAX_NEW_TOKENS": 4,
        "MONITOR_PERIOD_S": 0.2, "RAY_ADDRESS": address, "CC_MODES": cc_modes})


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return found


def read_run(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


RAY_BLOCKED = ("import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")  # then `import ray` fails


@dataclass
class Grids:
    """The module's grid on the cluster (both modes) and one of its points run here."""

    results: Path
    on_ray: subprocess.CompletedProcess
    local_results: Path
    local: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def grids(ray_cluster: LocalCluster, tiny_models: Path, server_workloads: Path, tiny_profile,
          tmp_path_factory: pytest.TempPathFactory) -> Grids:
    """Two points in both CC modes: two runs at once on each node. Then the first point run
    here without Ray, with ray made unimportable."""
    results = tmp_path_factory.mktemp("cluster") / "results"
    argv = grid_argv(results, ray_cluster.address, tiny_models, server_workloads, tiny_profile,
                     ["Immediate", "BestBatch+Timer"], ["on", "off"])
    on_ray = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    local_results = results.parent / "local"
    local_argv = grid_argv(local_results, "", tiny_models, server_workloads, tiny_profile,
                           ["Immediate"], [])
    local = subprocess.run([sys.executable, "-c", RAY_BLOCKED, *local_argv[1:]],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    return Grids(results, on_ray, local_results, local)


NAMES = ["bestbatch-timer__constant__rate3__sla5__rep0", "immediate__constant__rate3__sla5__rep0"]


def test_two_runs_at_once_land_like_a_local_run(grids: Grids) -> None:
    assert grids.on_ray.returncode == 0, grids.on_ray.stdout + grids.on_ray.stderr
    assert sorted(p.name for p in grids.results.iterdir()) == ["cc_off", "cc_on"]
    # Each node's two slots busy at once: the driver planned it, and the two runs of each mode
    # (on its one node) overlapped in time, by the runner's own record of each.
    assert "cc_off on 1 node, 2 at once; cc_on on 1 node, 2 at once" in grids.on_ray.stdout
    for mode in ("on", "off"):
        spans = [(run["wall_started_epoch_s"], run["wall_started_epoch_s"] + run["wall_time_s"])
                 for run in (read_run(grids.results / f"cc_{mode}" / name) for name in NAMES)]
        assert max(start for start, _ in spans) < min(end for _, end in spans), (mode, spans)
    assert grids.on_ray.stdout.count("accounting ok") == 4
    assert "[4/4] cc_o" in grids.on_ray.stdout
    for mode in ("on", "off"):
        assert sorted(p.name for p in (grids.results / f"cc_{mode}").iterdir()) == NAMES
        for name in NAMES:
            run_dir = grids.results / f"cc_{mode}" / name
            run = read_run(run_dir)
            assert run["status"] == "complete", run.get("failure")
            assert run["accounting_check"]["ok"], run["accounting_check"]
            assert run["accounting"]["issued"] == run["accounting"]["received"] == 6
            # The node's label, since a CPU detects no CC mode.
            assert run["environment"]["cc_mode"] == mode
            assert run["environment"]["cc_mode_detected"] == "unknown"
            assert run["environment"]["cc_source"] == f"ray node resource cc_{mode}"
            assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES
    # The same files as a local run of the same point, and the same arrivals.
    assert grids.local.returncode == 0, grids.local.stdout + grids.local.stderr
    local_dir = grids.local_results / NAMES[1]
    assert sorted(p.name for p in local_dir.iterdir()) == RUN_FILES
    on_ray = grids.results / "cc_off" / NAMES[1]
    assert set(read_run(on_ray)) == set(read_run(local_dir))
    schedule = (on_ray / "schedule.csv").read_text()
    assert schedule == (local_dir / "schedule.csv").read_text()
    assert not any((grids.results / f"cc_{mode}" / ".partial").exists() for mode in ("on", "off"))


def test_the_local_grid_never_imports_ray(grids: Grids) -> None:
    """RAY_ADDRESS "" is the grid as before: its run above ran with ray unimportable."""
    assert grids.local.returncode == 0, grids.local.stdout + grids.local.stderr
    assert "on Ray" not in grids.local.stdout
    assert read_run(grids.local_results / NAMES[1])["status"] == "complete"


def test_both_cc_modes_pair_in_the_report(grids: Grids) -> None:
    """The report's CC comparison pairs the runs of the two modes cell by cell; a rerun of
    the grid finds every run done."""
    from sincere.results.summary import summarise_runs
    from sincere.results.tables import cc_comparison_table

    records, warnings = summarise_runs([grids.results], workers=1)
    assert not warnings, warnings
    assert sorted(r.row["cc_mode"] for r in records) == ["off", "off", "on", "on"]
    cc = cc_comparison_table(pd.DataFrame([r.row for r in records]))
    pairs = cc[cc["metric"] == "requests_issued"]
    assert sorted(pairs["strategy"]) == ["BestBatch+Timer", "Immediate"]
    assert (pairs["runs_noncc"] == 1).all() and (pairs["runs_cc"] == 1).all()
    assert (pairs["ratio_noncc_over_cc"] == 1.0).all()  # the same arrivals on both sides
    kept = {p: p.stat().st_mtime_ns for p in grids.results.glob("cc_*/*/run.json")}
    rerun = subprocess.run(grids.on_ray.args, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "4 runs (4 already done with these parameters)" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def node_list(address: str) -> str:
    """``python -m sincere.grid.cluster --nodes``: a line per alive node."""
    listed = subprocess.run([sys.executable, "-m", "sincere.grid.cluster", "--nodes", "--address",
                             address], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return listed.stdout


def test_the_node_list_shows_what_each_node_offers(ray_cluster: LocalCluster) -> None:
    offers = sorted(line.split(None, 1)[1]
                    for line in node_list(ray_cluster.address).splitlines())
    assert offers == ["GPU 0  sincere_run 0  CC not advertised",  # the head
                      "GPU 0  sincere_run 2  CC off", "GPU 0  sincere_run 2  CC on"]


def test_a_lost_node_fails_its_run_and_a_rerun_redoes_it(ray_cluster: LocalCluster,
                                                         tiny_models: Path,
                                                         server_workloads: Path, tiny_profile,
                                                         tmp_path: Path) -> None:
    results = tmp_path / "results"
    argv = grid_argv(results, ray_cluster.address, tiny_models, server_workloads, tiny_profile,
                     ["Immediate"], ["on"], duration_s=60.0)
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    server = wait_for(lambda: next(iter(ray_cluster.servers()), None), 120, "the run's server")
    assert ray_cluster.node_running(server) == "on"
    # The node is lost mid-run, not at start: once the server has served a few requests (the
    # rows it flushed to its staged requests.csv, named by its command line).
    server_argv = server.cmdline()
    requests_csv = (Path(server.cwd()) / server_argv[server_argv.index("--run-dir") + 1]
                    / "requests.csv")
    wait_for(lambda: requests_csv.is_file() and len(requests_csv.read_text().splitlines()) > 3,
             120, "three requests served on the node")
    ray_cluster.cluster.remove_node(ray_cluster.nodes.pop("on"), allow_graceful=False)
    output, _ = driver.communicate(timeout=240)
    assert driver.returncode == 1, output
    run_dir = results / "cc_on" / "immediate__constant__rate3__sla5__rep0"
    failed = read_run(run_dir)
    assert failed["status"] == "failed"
    assert failed["failure"].startswith("the Ray task was lost: "), failed["failure"]
    assert not failed["accounting_check"]["ok"]  # its rows were on the lost node
    assert "lost with its task" in failed["accounting_check"]["problems"][-1]
    assert failed["params"]["strategy"] == "Immediate" and failed["params"]["mean_rps"] == 3.0
    assert "FAILED (the Ray task was lost" in output
    # The run's server followed its worker (the parent-death signal), as it would on a VM
    # that lost its Ray processes but not its power.
    psutil.wait_procs([server], timeout=60)
    assert not server.is_running()

    # With no CC-on node left, the grid is refused rather than left waiting for one.
    wait_for(lambda: "CC on" not in node_list(ray_cluster.address), 120,
             "Ray to see the CC-on node gone")
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "no node of the Ray cluster advertising cc_on has 1 sincere_run" in refused.stderr

    ray_cluster.add("on")  # the node is back
    rerun = subprocess.run([*argv, "--duration-s", "2"], capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 runs (0 already done with these parameters)" in rerun.stdout
    redone = read_run(run_dir)
    assert redone["status"] == "complete" and redone["accounting_check"]["ok"]


def test_ctrl_c_cancels_every_task_and_leaves_no_server(ray_cluster: LocalCluster,
                                                        tiny_models: Path,
                                                        server_workloads: Path, tiny_profile,
                                                        tmp_path: Path) -> None:
    results = tmp_path / "results"
    # Servers of an earlier test may still be stopping: only this grid's count.
    earlier = {p.pid for p in ray_cluster.servers()}
    # Ctrl-C in a terminal: SIGINT at its default, even where this suite runs as a background
    # job (a shell starts those with SIGINT ignored, and a child inherits that).
    driver = subprocess.Popen(grid_argv(results, ray_cluster.address, tiny_models,
                                        server_workloads, tiny_profile,
                                        ["Immediate", "BestBatch+Timer", "Dynamic+Delay"],
                                        ["off"], duration_s=60.0),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert driver.stdout is not None
    planned = driver.stdout.readline()  # the grid is planned: its interrupt handling is set
    assert planned.startswith("run_experiments: 3 runs"), planned

    def two_servers() -> list[psutil.Process] | None:
        servers = [p for p in ray_cluster.servers() if p.pid not in earlier]
        return servers if len(servers) == 2 else None

    servers = wait_for(two_servers, 120,
                       "two servers on the CC-off node (the third run waits for a slot)")
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    output = planned + output
    assert driver.returncode == 130, output
    assert "cancelling 3 Ray tasks" in output and "will be redone" in output
    gone, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive
    assert ray_cluster.servers() == []
    assert not any(p.name != ".partial" for p in (results / "cc_off").glob("*")), \
        "a cancelled run must not land as if finished"


def test_cc_modes_need_ray_and_known_names(tmp_path: Path) -> None:
    base = script_argv("run_experiments.py", {"RESULTS_DIR": tmp_path, "CC_MODES": ["on"]})
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "CC_MODES needs a Ray cluster" in refused.stderr
    with pytest.raises(ValueError, match="unknown CC mode"):
        grid_runs([GridPoint("Immediate", "gamma", 4.0, 10.0, 0)], tmp_path, ["maybe"])


def test_each_mode_has_its_folder_and_one_mode_less_grid_keeps_today_s_layout(
        tmp_path: Path) -> None:
    point = GridPoint("Immediate", "gamma", 4.0, 10.0, 0)
    assert grid_runs([point], tmp_path) == [GridRun(point, tmp_path)]
    runs = grid_runs([point], tmp_path, ["on", "off"])
    assert [r.run_dir for r in runs] == [tmp_path / "cc_on" / point.run_id,
                                         tmp_path / "cc_off" / point.run_id]
    assert [r.label for r in runs] == [f"cc_on/{point.run_id}", f"cc_off/{point.run_id}"]


def test_node_labels_never_contradict_the_gpu() -> None:
    assert node_resources(1, detected="on") == {"sincere_run": 1.0, "cc_on": 1.0}
    assert node_resources(2, "off", detected="unknown") == {"sincere_run": 2.0, "cc_off": 1.0}
    assert node_resources(1, detected="unknown") == {"sincere_run": 1.0}  # no mode: no label
    with pytest.raises(ValueError, match="reports CC on"):
        node_resources(1, "off", detected="on")


def test_a_packed_run_lands_whole_and_replaces_an_earlier_attempt(tmp_path: Path) -> None:
    run_dir = tmp_path / "node" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "complete"}')
    (run_dir / "requests.csv").write_bytes(os.urandom(5000))
    landed = tmp_path / "results"
    (landed / "r1").mkdir(parents=True)
    (landed / "r1" / "stale.csv").write_text("from a failed attempt")
    assert unpack_run(pack_run(run_dir), landed, "r1") == landed / "r1"
    assert sorted(p.name for p in (landed / "r1").iterdir()) == ["requests.csv", "run.json"]
    landed_bytes = (landed / "r1" / "requests.csv").read_bytes()
    assert landed_bytes == (run_dir / "requests.csv").read_bytes()
    assert not (landed / ".partial").exists()
    with pytest.raises(ValueError, match="not r2"):
        unpack_run(pack_run(run_dir), landed, "r2")


def test_paths_in_this_checkout_move_under_node_root(tmp_path: Path) -> None:
    from sincere.grid.cluster import for_node

    spec = RunSpec(results_dir=tmp_path, server_options={
        "MODELS_DIR": ROOT / "models", "PROFILES_DIR": Path("/data/profiles"), "MODELS": ["a"]},
        generator_options={"WORKLOADS_DIR": ROOT / "workloads"}, duration_s=1.0,
        drain_timeout_s=1.0, base_seed=0)
    moved = for_node(spec, Path("/srv/sincere"))
    assert moved.server_options == {"MODELS_DIR": Path("/srv/sincere/models"),
                                    "PROFILES_DIR": Path("/data/profiles"), "MODELS": ["a"]}
    assert moved.generator_options == {"WORKLOADS_DIR": Path("/srv/sincere/workloads")}
    assert for_node(spec, ROOT) == spec
