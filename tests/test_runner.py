"""run_experiments.py for real (server and generator subprocesses): kept runs, resume, books."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from sincere.runs.accounting import check_server_run
from tests.conftest import FINISHED_RUN
from tests.server_support import runner_argv


def test_a_run_is_kept_checked_and_named_for_its_grid_point(finished_grid) -> None:
    """The shared finished run (tests/conftest.py): 3 requests/s for 4 s are 12 requests, every
    one on both sides (its files' contents: tests/test_contracts.py)."""
    run = json.loads((finished_grid.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["accounting_check"]["ok"], run["accounting_check"]
    assert run["accounting"]["issued"] == run["accounting"]["received"] == 12
    assert run["params"]["pattern"] == "constant" and run["params"]["mean_rps"] == 3.0
    assert "accounting ok" in finished_grid.stdout
    assert sorted(p.name for p in finished_grid.results.iterdir()) == [FINISHED_RUN]  # staged
    # The plan before the run, and the run's line with the grid's progress.
    out = finished_grid.stdout
    assert "this machine (every run here is in its CC mode): " in out
    assert "run_experiments: estimated " in out
    [line] = [line for line in out.splitlines() if line.startswith("[1/1] ")]
    assert "; accounting ok; elapsed " in line and line.endswith(", all runs done")
    # The identity the runner worked out before the run is the one the server recorded.
    assert "params_mismatch" not in run and len(run["params_hash"]) == 16


def test_runs_are_resumed(tmp_path: Path, tiny_models, server_workloads, tiny_profile,
                          finished_grid) -> None:
    """A run that failed earlier and a half-staged one left by a killed runner: the rerun
    skips the finished run, redoes the failed one and clears the staging area."""
    results = Path(shutil.copytree(finished_grid.results, tmp_path / "results"))
    done = results / FINISHED_RUN
    failed = results / "bestbatch-timer__constant__rate3__sla5__rep0"
    failed.mkdir()
    (failed / "run.json").write_text(json.dumps({"status": "failed"}))
    stale = results / ".partial" / "dynamic-delay__constant__rate3__sla5__rep0"
    stale.mkdir(parents=True)
    (stale / "requests.csv").write_text("half a file")
    kept_mtime = (done / "run.json").stat().st_mtime_ns
    second = subprocess.run(
        runner_argv(results, tiny_models, server_workloads, tiny_profile,
                    ["Immediate", "BestBatch+Timer", "Dynamic+Delay"]),
        capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "3 runs (1 already done with these parameters)" in second.stdout
    assert "start-up and close (measured on 1 run)" in second.stdout
    lines = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert lines[0].startswith("[1/2] ") and " left" in lines[0] and "elapsed " in lines[0]
    assert lines[1].startswith("[2/2] ") and lines[1].endswith(", all runs done")
    assert (done / "run.json").stat().st_mtime_ns == kept_mtime
    for name in ("bestbatch-timer", "dynamic-delay"):
        run = json.loads((results / f"{name}__constant__rate3__sla5__rep0" / "run.json")
                         .read_text())
        assert run["status"] == "complete" and run["accounting_check"]["ok"]
    assert not (results / ".partial").exists()


def test_accounting_check_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "schedule.csv").write_text(
        "request_id,scheduled_s,model,prompt_id,prompt_tokens\n"
        "r000000,0.0,a,p,\nr000001,0.5,a,p,\nr000002,1.0,a,p,\n")
    (tmp_path / "client.csv").write_text(
        "request_id,model,scheduled_s,sent_s,received_s,client_latency_s,http_status,error\n"
        "r000000,a,0,0,1,1,200,\nr000001,a,0.5,0.5,1,0.5,200,\n")
    header = ("request_id,model,arrival_s,dispatch_s,start_s,end_s,batch_id,batch_size,"
              "queue_wait_s,swap_wait_s,processing_s,latency_s,sla_s,sla_met,status,"
              "prompt_tokens,output_tokens\n")
    (tmp_path / "requests.csv").write_text(
        header + "r000000,a,0,,,,,,,,,,5,False,unserved,,\n"
        "r000001,a,0.5,,,,,,,,,,5,False,rejected,,\n")
    check = check_server_run(tmp_path)
    assert not check["ok"]
    assert check["counts"] == {"issued": 3, "received": 2, "completed": 0, "rejected": 1,
                               "failed": 0, "unserved": 1, "shed": 0}
    assert "1 issued requests not in requests.csv (e.g. r000002)" in check["problems"]
    assert "1 issued requests not in client.csv" in check["problems"]
    assert "issued 3 != received 2" in check["problems"]


def test_a_run_without_its_files_fails_at_once_naming_them(tmp_path: Path, tiny_models,
                                                           server_workloads, tiny_profile) -> None:
    """The check a Ray node makes before it starts anything: each missing input is named,
    and the run is kept as failed without a server."""
    from sincere.grid.points import GridPoint
    from sincere.grid.runner import RunSpec, run_point

    profiles_dir = Path(tiny_profile.loading_file).parent
    spec = RunSpec(results_dir=tmp_path / "results", server_options={
        "MODELS_DIR": tiny_models, "MODELS": ["granite-7b", "mistral-7b"],
        "PROFILES": "cpu_noncc", "PROFILES_DIR": profiles_dir},
        generator_options={"WORKLOADS_DIR": server_workloads}, duration_s=2.0,
        drain_timeout_s=5.0, base_seed=0)
    assert spec.missing_inputs() == [f"{tiny_models}/mistral-7b/config.json"]
    spec.server_options.update(PROFILES="h100_cc", MODELS=["granite-7b"])
    spec.generator_options.update(WORKLOADS_DIR=tmp_path / "empty",
                                  TRACE_PATH=tmp_path / "trace.csv")
    assert spec.missing_inputs() == [
        f"{tmp_path}/empty/*.json (the prompts)",
        f"{profiles_dir}/model_loading_times_h100_cc*.csv",
        f"{profiles_dir}/batch_profiling_h100_cc*.csv", str(tmp_path / "trace.csv")]
    run = run_point(GridPoint("Immediate", "constant", 3.0, 5.0, 0), spec, log=lambda _: None)
    assert run["status"] == "failed"
    assert run["failure"].startswith("missing on ") and "h100_cc" in run["failure"]
    kept = tmp_path / "results" / "immediate__constant__rate3__sla5__rep0"
    assert sorted(p.name for p in kept.iterdir()) == ["run.json"]  # no server was started
