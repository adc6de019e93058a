"""Run the experiment grid for real: for each run, start the server, send the traffic, keep the run.

    python run_experiments.py                                  # the original study's grid
    python run_experiments.py --strategies BestBatch+Timer --patterns gamma --means 8 --slas 40

For each grid point (STRATEGIES x PATTERNS x MEANS x SLAS x REPEATS): start
api_scheduler_experiments.py, wait until it answers, run api_calls.py, let the server drain and
exit, check the accounting (issued = received = ok + rejected + failed + unserved, every issued
request in requests.csv once) and move the run into RESULTS_DIR/<run_id>/. A rerun skips
finished runs (and redoes failed ones, unless RETRY_FAILED is false). Ctrl-C stops the children
and leaves nothing half-written that looks finished. Before the first run it prints the plan:
runs done and to do (per CC mode), the machine's GPU and CC mode, and the estimated duration
(traffic + expected drain + start-up per run, sincere/grid/plan.py); DRY_RUN prints only that.
It stops in seconds, before any run, when a run's files are missing or the profile does not fit
the models and engine to be served. One line per run with its headline figures, [k/N], the time
elapsed and the time left.

With RAY_ADDRESS the runs are Ray tasks spread over the machines of a Ray cluster (or of a local
Ray instance), each on a node with a free GPU, and every run directory comes back into
RESULTS_DIR exactly as above; with CC_MODES, each point runs on a node of each mode. See
docs/cluster.md.

With SERVER_URL set, the grid (PATTERNS x MEANS x SLAS x REPEATS) goes to that server instead,
which the user runs (vLLM, SGLang, any OpenAI-compatible server; API openai-completions or
openai-chat, the key from OPENAI_API_KEY): no server is started here, no profile is needed, and
each run is kept client-side, with the CC mode that CC_MODE gives when it cannot be detected
(sincere/grid/external.py; docs/openai.md).

API_KEY in the environment is given to every server this starts and sent by every generator
(on a Ray cluster it travels to the nodes with each run); TLS_CERT and TLS_KEY make the servers
serve HTTPS, checked against CA_FILE (the certificate itself when CA_FILE is empty). With
SERVER_URL, an https:// URL is checked against CA_FILE. See docs/server.md.
"""

import contextlib
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
HOST = "127.0.0.1"  # the server listens here (beyond loopback: set API_KEY in the environment)
ALLOW_NO_KEY = False  # let the servers listen beyond loopback without API_KEY (an open door)
TLS_CERT = ""  # the servers serve HTTPS with this certificate (PEM; "" = plain HTTP)...
TLS_KEY = ""  # ...and its private key (PEM)
CA_FILE = ""  # what an https server is trusted by ("" = TLS_CERT, or the usual CAs)
PORT = 0  # the server's port (0 = a free port for each run)
DEVICE = ""  # torch device for the server ("" = cuda when there is one, else cpu)
DECODE = "eager"  # the server's batch engine: eager, or static (static KV cache + torch.compile)
HOST_CACHE = True  # the server keeps every model's weights in host RAM between swaps
ENGINE_PROCESS = True  # the server runs its engine in a process of its own
PIN_CORES = True  # split the cores: server and generator on half, the engine on the rest
ALLOW_PROFILE_MISMATCH = False  # plan with a profile of another CC mode, load path or model size
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
DRY_RUN = False  # print the plan (runs done and to do, estimated duration, checks) and exit


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    from sincere.access import client_verify, server_door, server_key
    from sincere.assets.model_store import weights_gb
    from sincere.grid import cluster
    from sincere.grid.external import external_params, external_points, run_external_point
    from sincere.grid.plan import GridPlan, capacity, startup_guess_s
    from sincere.grid.points import GridRun, RunConflict, grid_runs
    from sincere.grid.runner import PARTIAL_DIR, PROFILE_KINDS, RunSpec, run_point
    from sincere.host.environment import environment_block
    from sincere.host.preflight import find_gpu
    from sincere.profiles.profile_set import ProfileError
    from sincere.profiles.selection import fit_problems, grid_profiles, profile_mismatches
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
        api_key = server_key()
        if not cfg.SERVER_URL:  # the servers' door, checked once rather than run by run
            server_door(cfg, Path(__file__).name)
        ca_file = cfg.CA_FILE or ("" if cfg.SERVER_URL else cfg.TLS_CERT)
        client_verify(ca_file)
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
        "DECODE": cfg.DECODE, "ALLOW_NO_KEY": cfg.ALLOW_NO_KEY,
        **({"DEVICE": cfg.DEVICE} if cfg.DEVICE else {}),
        **({"TLS_CERT": Path(cfg.TLS_CERT).resolve(), "TLS_KEY": Path(cfg.TLS_KEY).resolve()}
           if cfg.TLS_CERT else {}),
    }
    generator_options = {"MODEL_MIX": cfg.MODEL_MIX,
                         "WORKLOADS_DIR": Path(cfg.WORKLOADS_DIR).resolve(), "API": cfg.API,
                         "SERVED_MODELS": cfg.SERVED_MODELS, "MAX_TOKENS": cfg.MAX_NEW_TOKENS,
                         "CC_MODE": cfg.CC_MODE,
                         **({"CA_FILE": Path(ca_file).resolve()} if ca_file else {})}
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
                       profiles=profiles.get(run.cc_mode, {}), api_key=api_key)

    def params(run: GridRun) -> dict:
        spec = spec_for(run)
        return (external_params(run.point, spec, cfg.SERVER_URL) if cfg.SERVER_URL
                else spec.params(run.point))

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    plan = GridPlan(runs, cfg.DURATION_S, cfg.DRAIN_TIMEOUT_S, cfg.MAX_QUEUE, say=say)
    finished: list[dict] = []

    def choose() -> list[GridRun]:
        """The runs not finished with these parameters: known once the profile set is."""
        known = bool(profiles) or bool(cfg.SERVER_URL)
        return plan.choose(params if known else None, cfg.OVERWRITE, cfg.RETRY_FAILED)

    def announce(slots: dict[str, float], machine: str = "") -> None:
        where = (f" on Ray ({cfg.RAY_ADDRESS})" if cfg.RAY_ADDRESS else
                 f" to {cfg.SERVER_URL} ({cfg.API})" if cfg.SERVER_URL else "")
        unknown = "" if profiles or cfg.SERVER_URL else "; none matched: no profile set yet"
        plan.announce(slots, lambda run: bool(
            params(run).get("strategy_params", {}).get("shed_late")),
            f"{len(runs)} runs ({len(runs) - len(plan.todo)} already done with these "
            f"parameters{unknown}), {cfg.DURATION_S:g} s of traffic each -> {results_dir}/"
            f"{where}", machine)

    def report(run: GridRun, result: dict) -> None:
        finished.append(result)
        print_progress(len(finished), len(plan.todo), run.label, result,
                       plan.finished(run, result))

    def local_profiles() -> list[str]:
        """Every run's servers plan with this machine's profile set (the nodes of a cluster
        have the same files at the same paths): read it, and say what would make the runs
        fail (files missing here, a profile that does not fit what is served), each with its
        fix. The nodes of a cluster check their own files, at NODE_ROOT."""
        here = cfg.RAY_ADDRESS in ("", "local") and runs
        missing = spec_for(runs[0]).missing_inputs() if here else []
        try:
            profile_set = grid_profiles(*profile_args)
        except ValueError as exc:  # the profile set is named once, not among the files
            missing = [m for m in missing if not any(kind in m for kind in PROFILE_KINDS)]
            return [f"missing: {', '.join(missing)}"] * bool(missing) + [str(exc)]
        problems = [f"missing: {', '.join(missing)}"] if missing else []
        profiles.update({run.cc_mode: profile_set.describe(cfg.PROFILES) for run in runs})
        with contextlib.suppress(ProfileError):  # a model without a profile: named below
            plan.served = capacity(profile_set, cfg.MODEL_MIX, cfg.MAX_NEW_TOKENS)
        if cfg.ALLOW_PROFILE_MISMATCH:
            return problems
        problems += fit_problems(profile_set, models,
                                 weights_gb(Path(cfg.MODELS_DIR), models), cfg.DECODE)
        if not cfg.RAY_ADDRESS:  # the nodes' servers check their own machine
            problems += profile_mismatches(profile_set, environment_block(), cfg.HOST_CACHE,
                                           models)
        return problems

    def stop_for(problems: list[str]) -> int | None:
        """None to go on with the runs; else the exit status, each problem said (a dry run
        only plans: status 0)."""
        if cfg.DRY_RUN:
            for problem in problems:
                say(f"before the runs can start: {problem}")
            say("DRY_RUN: the plan only, nothing started")
            return 0
        print("".join(f"error: {problem}\n" for problem in problems), end="", file=sys.stderr)
        return 2 if problems else None

    started = time.monotonic()
    try:
        if cfg.SERVER_URL:  # another server: no profile to plan with
            plan.startup_guess_s = startup_guess_s(False, cfg.DECODE, external=True)
            choose()
            announce({"": 1.0})
            status = stop_for([])
            if status is not None:
                return status
            for run in plan.todo:
                report(run, run_external_point(run.point, spec_for(run), cfg.SERVER_URL))
        elif not cfg.RAY_ADDRESS:
            gpu = find_gpu()
            plan.startup_guess_s = startup_guess_s(gpu.count > 0 and cfg.DEVICE != "cpu",
                                                   cfg.DECODE)
            problems = local_profiles()
            choose()
            announce({"": 1.0},
                     f"this machine (every run here is in its CC mode): {gpu.describe()}")
            status = stop_for(problems)
            if status is not None:
                return status
            for run in plan.todo:
                report(run, run_point(run.point, spec_for(run)))
        else:
            config = cluster.ClusterConfig(cfg.RAY_ADDRESS, cfg.RUN_GPUS, cfg.RUNS_PER_NODE,
                                           cfg.NODE_ROOT)
            modes = [run.cc_mode for run in runs]
            gpus = find_gpu().count if cfg.RAY_ADDRESS == "local" else 0
            on_gpus = cfg.RUN_GPUS > 0 and (gpus > 0 or cfg.RAY_ADDRESS != "local")
            plan.startup_guess_s = startup_guess_s(on_gpus, cfg.DECODE)
            # PROFILES=auto on a cluster: each node plans with its own device's and CC mode's
            # profile, so the nodes are asked which; else the files here are the nodes' too.
            on_nodes = cfg.PROFILES == "auto" and cfg.RAY_ADDRESS != "local"
            problems = [] if on_nodes else local_profiles()
            if problems and not cfg.DRY_RUN:  # before joining the cluster
                return stop_for(problems)
            if not on_nodes:
                choose()
            if cfg.DRY_RUN and cfg.RAY_ADDRESS == "local":  # plan without starting Ray
                announce({mode: gpus // cfg.RUN_GPUS if on_gpus else float(cfg.RUNS_PER_NODE)
                          for mode in modes})
                return stop_for(problems)
            if not (on_nodes or plan.todo or cfg.DRY_RUN):
                announce({})  # every run done: no cluster to join
            else:
                with cluster.connected(config) as ray:
                    if on_nodes:
                        profiles.update(cluster.profiles_on_nodes(ray, modes, config,
                                                                  profile_args))
                        choose()
                    announce(cluster.run_slots(ray, modes, cfg.RUN_GPUS))
                    status = stop_for(problems)
                    if status is not None:
                        return status
                    if plan.todo:
                        cluster.run_on_ray(ray, plan.todo, spec_for, config, report)
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
    print(f"run_experiments: {len(plan.todo)} runs in {time.monotonic() - started:.0f} s, "
          f"{failed} failed; summarise with: python process_results.py {results_dir}")
    return 1 if failed else 0


def say(line: str) -> None:
    """One line of the plan, flushed (a log read while the grid runs)."""
    print(f"run_experiments: {line}", flush=True)


def print_progress(n: int, total: int, label: str, run: dict, progress: str = "") -> None:
    """A finished run's line: [k/N], its figures (or why it failed), its books, and the
    grid's progress (``elapsed ..., about ... left``)."""
    progress = f"; {progress}" if progress else ""
    check = run.get("accounting_check", {})
    counts = check.get("counts", run.get("accounting", {}))
    books = "accounting ok" if check.get("ok") else \
        f"ACCOUNTING: {'; '.join(check.get('problems', [])) or 'not checked'}"
    if run.get("status") != "complete":
        print(f"[{n}/{total}] {label}: FAILED ({run.get('failure')}); "
              f"{counts.get('received', 0)} requests recorded; {books}{progress}", flush=True)
        return
    summary = run.get("summary", {})
    print(f"[{n}/{total}] {label}: SLA {summary.get('sla_attainment', 0):.1%}, "
          f"p90 {summary.get('latency_p90_s') or float('nan'):.2f} s, "
          f"{summary.get('throughput_rps') or 0:.2f} req/s, {summary.get('swaps')} swaps, "
          f"{counts.get('issued')} issued, unserved {counts.get('unserved')}, "
          f"{run.get('wall_time_s', 0):.0f} s; {books}{progress}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
