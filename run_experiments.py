"""Run the experiment grid for real: for each run, start the server, send the traffic, keep the run.

    python run_experiments.py                                  # the original study's grid
    python run_experiments.py --strategies BestBatch+Timer --patterns gamma --means 8 --slas 40

For each grid point (STRATEGIES x PATTERNS x MEANS x SLAS x REPEATS): start
api_scheduler_experiments.py, wait until it answers, run api_calls.py, let the server drain and
exit, check the accounting (issued = received = ok + rejected + failed + unserved, every issued
request in requests.csv once) and move the run into RESULTS_DIR/<run_id>/. A rerun skips
finished runs (and redoes failed ones, unless RETRY_FAILED is false). Ctrl-C stops the children
and leaves nothing half-written that looks finished. One line per run with its headline figures.

With RAY_ADDRESS the runs are Ray tasks spread over the machines of a Ray cluster (or of a local
Ray instance), each on a node with a free GPU, and every run directory comes back into
RESULTS_DIR exactly as above; with CC_MODES, each point runs on a node of each mode. See
docs/cluster.md.

With SERVER_URL set, the grid (PATTERNS x MEANS x SLAS x REPEATS) goes to that server instead,
which the user runs (vLLM, SGLang, any OpenAI-compatible server; API openai-completions or
openai-chat, the key from OPENAI_API_KEY): no server is started here, no profile is needed, and
each run is kept client-side, with the CC mode that CC_MODE gives when it cannot be detected
(sincere/grid/external.py; docs/openai.md).
"""

import signal
import sys
import time
from pathlib import Path

from sincere.assets import architectures
from sincere.cli import parse_constants
from sincere.grid.points import expand_grid

RESULTS_DIR = "results"  # where the run directories go
PROFILES = "auto"  # profile set for the server (auto: this device and CC mode's newest)
PROFILES_DIR = "profiling_results"  # folder of the profile CSVs
MODELS_DIR = "models"  # folder of model subfolders (download_models.py)
WORKLOADS_DIR = "workloads"  # prompts, one JSON file each (generate_workloads_jsonl.py)
STRATEGIES = ["BestBatch", "BestBatch+Timer", "SelectBatch+Timer",
              "BestBatch+PartialBatch+Timer"]  # strategies to compare
PATTERNS = ["gamma", "bursty", "ramp"]  # traffic patterns
MEANS = [4.0, 8.0, 12.0]  # mean request rates, requests per second
SLAS = [40.0, 60.0, 80.0]  # SLAs, seconds from arrival to completion
REPEATS = 1  # runs per grid cell (each with its own arrival seed)
DURATION_S = 1200.0  # traffic duration of each run, seconds
SEED = 0  # base seed of the arrivals (repeat r uses SEED + r)
MODEL_MIX = dict(architectures.DEFAULT_MODEL_MIX)  # share of each model
MAX_NEW_TOKENS = 50  # new tokens per request
DRAIN_TIMEOUT_S = 600.0  # after the traffic ends, serve the queues for at most this long
STD_FACTOR = 1.0  # k: the scheduler plans load time as mean + k * std
MARGIN_S = 1.0  # safety margin of the timers, seconds
SHED_LATE = False  # shed requests that can no longer meet their SLA (always on for MaxGoodput)
MAX_QUEUE_DELAY_S = 1.0  # Dynamic+Delay: longest wait of the oldest request, seconds
RATE_WINDOW_S = 60.0  # SelectBatch+Timer: window of the arrival-rate estimate, seconds
MAX_QUEUE = 3000  # the server refuses requests beyond this many queued (429)
GAMMA_SHAPE = 1.0  # gamma pattern: shape k (1 = Poisson; CV = 1/sqrt(k))
BURST_ON_S = 2.0  # bursty pattern: mean burst duration, seconds
BURST_OFF_S = 12.0  # bursty pattern: mean idle duration, seconds
BURST_PEAK_TO_MEAN = 5.0  # bursty pattern: rate inside a burst / mean rate
RAMP_PERIOD_S = 40.0  # ramp pattern: period of the triangle, seconds
RAMP_ALPHA = 0.75  # ramp pattern: rate swings between mean*(1-alpha) and mean*(1+alpha)
TRACE_PATH = ""  # trace pattern: Azure CSV or Mooncake JSONL to replay
HOST = "127.0.0.1"  # the server listens here
PORT = 0  # the server's port (0 = a free port for each run)
DEVICE = ""  # torch device for the server ("" = cuda when there is one, else cpu)
DECODE = "eager"  # the server's batch engine: eager, or static (static KV cache + torch.compile)
HOST_CACHE = True  # the server keeps every model's weights in host RAM between swaps
ENGINE_PROCESS = True  # the server runs its engine in a process of its own
PIN_CORES = True  # split the cores: server and generator on half, the engine on the rest
ALLOW_PROFILE_MISMATCH = False  # let the server plan with a profile of another CC mode or load path
MONITOR_PERIOD_S = 0.5  # CPU/GPU sampling period, seconds
START_TIMEOUT_S = 600.0  # how long the server may take to read the models and answer
RUN_TIMEOUT_S = 0.0  # a run taking longer fails (0 = duration + drain timeout + 300 s)
RETRY_FAILED = True  # on a rerun, redo runs that failed (finished runs are always skipped)
OVERWRITE = False  # redo runs already finished in RESULTS_DIR (else: kept if same parameters)
RAY_ADDRESS = ""  # Ray: "" = none, runs here; local = start one here; auto, host:port, ray://...
RUN_GPUS = 1.0  # Ray: GPUs a run holds (nodes without GPUs: a sincere_run slot instead)
RUNS_PER_NODE = 1  # Ray local: sincere_run slots here (cluster nodes advertise their own)
CC_MODES = []  # Ray: run each point on a node of each mode (on off) into RESULTS_DIR/cc_<mode>/
NODE_ROOT = ""  # Ray: this checkout's path on the nodes ("" = the same path as here)
SERVER_URL = ""  # run the grid against this running server instead of starting SINCERE's
API = "sincere"  # how the generator sends: sincere (/inference), openai-completions, openai-chat
SERVED_MODELS = {}  # OpenAI API: alias=served model name, where the server names a model otherwise
CC_MODE = ""  # with SERVER_URL: on or off, the server machine's CC mode when it is not detected


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    from sincere.grid import cluster
    from sincere.grid.external import external_params, external_points, run_external_point
    from sincere.grid.points import GridRun, PlannedRun, RunConflict, grid_runs, runs_to_do
    from sincere.grid.runner import PARTIAL_DIR, RunSpec, run_point
    from sincere.profiles.selection import grid_profiles
    from sincere.runs.identity import run_identity
    from sincere.traffic.patterns import PATTERNS as KNOWN_PATTERNS
    from sincere.traffic.patterns import options_from_constants

    results_dir = Path(cfg.RESULTS_DIR)
    try:
        points = (external_points(cfg.PATTERNS, cfg.MEANS, cfg.SLAS, cfg.REPEATS)
                  if cfg.SERVER_URL else
                  expand_grid(cfg.STRATEGIES, cfg.PATTERNS, cfg.MEANS, cfg.SLAS, cfg.REPEATS))
        unknown = [p for p in cfg.PATTERNS if p not in KNOWN_PATTERNS]
        if unknown:
            raise ValueError(f"unknown pattern(s) {', '.join(unknown)}; known: "
                             f"{', '.join(KNOWN_PATTERNS)}")
        if cfg.CC_MODES and not cfg.RAY_ADDRESS:
            raise ValueError("CC_MODES needs a Ray cluster (RAY_ADDRESS) with nodes of each "
                             "mode: one machine has one CC mode")
        if cfg.SERVER_URL and cfg.RAY_ADDRESS:
            raise ValueError("SERVER_URL runs the grid against one server from here; "
                             "RAY_ADDRESS spreads SINCERE's servers over machines: choose one")
        runs = grid_runs(points, results_dir, cfg.CC_MODES)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    models = list(cfg.MODEL_MIX)
    server_options = {
        "PROFILES": cfg.PROFILES, "PROFILES_DIR": Path(cfg.PROFILES_DIR).resolve(),
        "MODELS_DIR": Path(cfg.MODELS_DIR).resolve(), "MODELS": models,
        "MAX_NEW_TOKENS": cfg.MAX_NEW_TOKENS, "STD_FACTOR": cfg.STD_FACTOR,
        "MARGIN_S": cfg.MARGIN_S, "SHED_LATE": cfg.SHED_LATE,
        "MAX_QUEUE_DELAY_S": cfg.MAX_QUEUE_DELAY_S,
        "RATE_WINDOW_S": cfg.RATE_WINDOW_S, "MAX_QUEUE": cfg.MAX_QUEUE,
        "ALLOW_PROFILE_MISMATCH": cfg.ALLOW_PROFILE_MISMATCH,
        "HOST_CACHE": cfg.HOST_CACHE, "MONITOR_PERIOD_S": cfg.MONITOR_PERIOD_S,
        "ENGINE_PROCESS": cfg.ENGINE_PROCESS, "PIN_CORES": cfg.PIN_CORES,
        "DECODE": cfg.DECODE,
        **({"DEVICE": cfg.DEVICE} if cfg.DEVICE else {}),
    }
    generator_options = {"MODEL_MIX": cfg.MODEL_MIX,
                         "WORKLOADS_DIR": Path(cfg.WORKLOADS_DIR).resolve(), "API": cfg.API,
                         "SERVED_MODELS": cfg.SERVED_MODELS, "MAX_TOKENS": cfg.MAX_NEW_TOKENS,
                         "CC_MODE": cfg.CC_MODE}
    profile_args = (cfg.PROFILES, Path(cfg.PROFILES_DIR).resolve(), cfg.DEVICE, cfg.DECODE,
                    cfg.STD_FACTOR)
    profiles: dict[str, dict] = {}  # ProfileSet.describe() of the servers, by CC mode of node

    def spec_for(run: GridRun) -> RunSpec:
        pattern = run.point.pattern
        pattern_options = {name.upper(): value
                           for name, value in options_from_constants(cfg, pattern).items()}
        if "TRACE_PATH" in pattern_options:
            pattern_options["TRACE_PATH"] = Path(pattern_options["TRACE_PATH"]).resolve()
        return RunSpec(results_dir=run.results_dir, server_options=server_options,
                       generator_options={**generator_options, **pattern_options},
                       duration_s=cfg.DURATION_S, drain_timeout_s=cfg.DRAIN_TIMEOUT_S,
                       base_seed=cfg.SEED, host=cfg.HOST, port=cfg.PORT,
                       start_timeout_s=cfg.START_TIMEOUT_S, run_timeout_s=cfg.RUN_TIMEOUT_S,
                       profiles=profiles.get(run.cc_mode, {}))

    def params(run: GridRun) -> dict:
        spec = spec_for(run)
        return (external_params(run.point, spec, cfg.SERVER_URL) if cfg.SERVER_URL
                else spec.params(run.point))

    def plan() -> list[GridRun]:
        """The runs to make: those not finished with these parameters (RunConflict when a
        finished one was made with others), announced."""
        wanted = runs_to_do([PlannedRun(run.label, run.run_dir, run_identity(params(run)))
                             for run in runs], cfg.OVERWRITE, cfg.RETRY_FAILED)
        labels = {planned.run_id for planned in wanted}
        todo[:] = [run for run in runs if run.label in labels]
        where = (f" on Ray ({cfg.RAY_ADDRESS})" if cfg.RAY_ADDRESS else
                 f" to {cfg.SERVER_URL} ({cfg.API})" if cfg.SERVER_URL else "")
        print(f"run_experiments: {len(runs)} runs ({len(runs) - len(todo)} already done with "
              f"these parameters), {cfg.DURATION_S:g} s of traffic each -> {results_dir}/"
              f"{where}", flush=True)
        return todo

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    todo: list[GridRun] = []
    finished: list[dict] = []

    def report(run: GridRun, result: dict) -> None:
        finished.append(result)
        print_progress(len(finished), len(todo), run.label, result)

    def local_profiles() -> dict[str, dict]:
        """Every run's servers plan with this machine's profile set (the nodes of a cluster
        have the same files at the same paths)."""
        described = grid_profiles(*profile_args).describe(cfg.PROFILES)
        return {run.cc_mode: described for run in runs}

    started = time.monotonic()
    try:
        if cfg.SERVER_URL:  # another server: no profile to plan with
            for run in plan():
                report(run, run_external_point(run.point, spec_for(run), cfg.SERVER_URL))
        elif not cfg.RAY_ADDRESS:
            profiles.update(local_profiles())
            for run in plan():
                report(run, run_point(run.point, spec_for(run)))
        else:
            config = cluster.ClusterConfig(cfg.RAY_ADDRESS, cfg.RUN_GPUS, cfg.RUNS_PER_NODE,
                                           cfg.NODE_ROOT)
            # PROFILES=auto on a cluster: each node plans with its own device's and CC mode's
            # profile, so the nodes are asked which; else the files here are the nodes' too.
            on_nodes = cfg.PROFILES == "auto" and cfg.RAY_ADDRESS != "local"
            if not on_nodes:
                profiles.update(local_profiles())
            if on_nodes or plan():
                with cluster.connected(config) as ray:
                    if on_nodes:
                        profiles.update(cluster.profiles_on_nodes(
                            ray, [run.cc_mode for run in runs], config, profile_args))
                        plan()
                    if todo:
                        cluster.run_on_ray(ray, todo, spec_for, config, report)
    except (RunConflict, ValueError, cluster.ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        left = ("dropped on their nodes" if cfg.RAY_ADDRESS
                else f"left in {results_dir / PARTIAL_DIR}")
        print(f"\ninterrupted: the unfinished runs were stopped (their files {left}) and will "
              "be redone; rerun the same command to go on", file=sys.stderr)
        return 130
    failed = sum(run.get("status") != "complete" for run in finished)
    print(f"run_experiments: {len(todo)} runs in {time.monotonic() - started:.0f} s, "
          f"{failed} failed; summarise with: python process_results.py {results_dir}")
    return 1 if failed else 0


def print_progress(n: int, total: int, label: str, run: dict) -> None:
    check = run.get("accounting_check", {})
    counts = check.get("counts", run.get("accounting", {}))
    books = "accounting ok" if check.get("ok") else \
        f"ACCOUNTING: {'; '.join(check.get('problems', [])) or 'not checked'}"
    if run.get("status") != "complete":
        print(f"[{n}/{total}] {label}: FAILED ({run.get('failure')}); "
              f"{counts.get('received', 0)} requests recorded; {books}", flush=True)
        return
    summary = run.get("summary", {})
    print(f"[{n}/{total}] {label}: SLA {summary.get('sla_attainment', 0):.1%}, "
          f"p90 {summary.get('latency_p90_s') or float('nan'):.2f} s, "
          f"{summary.get('throughput_rps') or 0:.2f} req/s, {summary.get('swaps')} swaps, "
          f"{counts.get('issued')} issued, unserved {counts.get('unserved')}, "
          f"{run.get('wall_time_s', 0):.0f} s; {books}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
