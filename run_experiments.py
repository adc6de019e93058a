"""Run the experiment grid for real: for each run, start the server, send the traffic, keep the run.

    python run_experiments.py                                  # the original study's grid
    python run_experiments.py --strategies BestBatch+Timer --patterns gamma --means 8 --slas 40

For each grid point (STRATEGIES x PATTERNS x MEANS x SLAS x REPEATS): start
api_scheduler_experiments.py, wait until it answers, run api_calls.py, let the server drain and
exit, check the accounting (issued = received = ok + rejected + failed + unserved, every issued
request in requests.csv once) and move the run into RESULTS_DIR/<run_id>/. A rerun skips
finished runs (and redoes failed ones, unless RETRY_FAILED is false). Ctrl-C stops the children
and leaves nothing half-written that looks finished. One line per run with its headline figures.

With SERVER_URL set, the grid (PATTERNS x MEANS x SLAS x REPEATS) goes to that server instead,
which the user runs (vLLM, SGLang, any OpenAI-compatible server; API openai-completions or
openai-chat, the key from OPENAI_API_KEY): no server is started here, no profile is needed, and
each run is kept client-side, with the CC mode that CC_MODE gives when it cannot be detected
(sincere/external_runs.py).
"""

import signal
import sys
import time
from pathlib import Path

from sincere import architectures
from sincere.cli import parse_constants
from sincere.grid import expand_grid

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
ALLOW_PROFILE_MISMATCH = False  # let the server plan with a profile of another CC mode or load path
MONITOR_PERIOD_S = 0.5  # CPU/GPU sampling period, seconds
START_TIMEOUT_S = 600.0  # how long the server may take to read the models and answer
RUN_TIMEOUT_S = 0.0  # a run taking longer fails (0 = duration + drain timeout + 300 s)
RETRY_FAILED = True  # on a rerun, redo runs that failed (finished runs are always skipped)
OVERWRITE = False  # redo runs already finished in RESULTS_DIR (else: kept if same parameters)
SERVER_URL = ""  # run the grid against this running server instead of starting SINCERE's
API = "sincere"  # how the generator sends: sincere (/inference), openai-completions, openai-chat
SERVED_MODELS = {}  # OpenAI API: alias=served model name, where the server names a model otherwise
CC_MODE = ""  # with SERVER_URL: on or off, the server machine's CC mode when it is not detected


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    from sincere.experiment import grid_profiles
    from sincere.external_runs import external_params, external_points, run_external_point
    from sincere.grid import PlannedRun, RunConflict, runs_to_do
    from sincere.identity import run_identity
    from sincere.runner import PARTIAL_DIR, RunSpec, run_point
    from sincere.traffic import PATTERNS as KNOWN_PATTERNS
    from sincere.traffic import options_from_constants

    try:
        points = (external_points(cfg.PATTERNS, cfg.MEANS, cfg.SLAS, cfg.REPEATS)
                  if cfg.SERVER_URL else
                  expand_grid(cfg.STRATEGIES, cfg.PATTERNS, cfg.MEANS, cfg.SLAS, cfg.REPEATS))
        unknown = [p for p in cfg.PATTERNS if p not in KNOWN_PATTERNS]
        if unknown:
            raise ValueError(f"unknown pattern(s) {', '.join(unknown)}; known: "
                             f"{', '.join(KNOWN_PATTERNS)}")
        profiles = None if cfg.SERVER_URL else grid_profiles(  # another server: none needed
            cfg.PROFILES, Path(cfg.PROFILES_DIR), cfg.DEVICE, cfg.DECODE, cfg.STD_FACTOR)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_dir = Path(cfg.RESULTS_DIR)
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
        "DECODE": cfg.DECODE,
        **({"DEVICE": cfg.DEVICE} if cfg.DEVICE else {}),
    }
    generator_options = {"MODEL_MIX": cfg.MODEL_MIX,
                         "WORKLOADS_DIR": Path(cfg.WORKLOADS_DIR).resolve(), "API": cfg.API,
                         "SERVED_MODELS": cfg.SERVED_MODELS, "MAX_TOKENS": cfg.MAX_NEW_TOKENS,
                         "CC_MODE": cfg.CC_MODE}

    def spec_for(pattern: str) -> RunSpec:
        pattern_options = {name.upper(): value
                           for name, value in options_from_constants(cfg, pattern).items()}
        if "TRACE_PATH" in pattern_options:
            pattern_options["TRACE_PATH"] = Path(pattern_options["TRACE_PATH"]).resolve()
        return RunSpec(results_dir=results_dir, server_options=server_options,
                       generator_options={**generator_options, **pattern_options},
                       duration_s=cfg.DURATION_S, drain_timeout_s=cfg.DRAIN_TIMEOUT_S,
                       base_seed=cfg.SEED, host=cfg.HOST, port=cfg.PORT,
                       start_timeout_s=cfg.START_TIMEOUT_S, run_timeout_s=cfg.RUN_TIMEOUT_S,
                       profiles=profiles.describe(cfg.PROFILES) if profiles else {})

    specs = {p.run_id: spec_for(p.pattern) for p in points}
    try:
        planned = runs_to_do([PlannedRun(p.run_id, results_dir / p.run_id,
                                         run_identity(external_params(p, specs[p.run_id],
                                                                      cfg.SERVER_URL)
                                                      if cfg.SERVER_URL else
                                                      specs[p.run_id].params(p)))
                              for p in points], cfg.OVERWRITE, cfg.RETRY_FAILED)
    except RunConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wanted = {run.run_id for run in planned}
    todo = [p for p in points if p.run_id in wanted]
    print(f"run_experiments: {len(points)} runs ({len(points) - len(todo)} already done), "
          f"{cfg.DURATION_S:g} s of traffic each"
          f"{f' to {cfg.SERVER_URL} ({cfg.API})' if cfg.SERVER_URL else ''} -> {results_dir}/",
          flush=True)

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    failed = 0
    started = time.monotonic()
    try:
        for n, point in enumerate(todo, start=1):
            run = (run_external_point(point, specs[point.run_id], cfg.SERVER_URL)
                   if cfg.SERVER_URL else run_point(point, specs[point.run_id]))
            failed += run["status"] != "complete"
            print_progress(n, len(todo), run)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the unfinished run is left in {results_dir / PARTIAL_DIR} and "
              "will be redone; rerun the same command to go on", file=sys.stderr)
        return 130
    print(f"run_experiments: {len(todo)} runs in {time.monotonic() - started:.0f} s, "
          f"{failed} failed; summarise with: python process_results.py {results_dir}")
    return 1 if failed else 0


def print_progress(n: int, total: int, run: dict) -> None:
    check = run.get("accounting_check", {})
    counts = check.get("counts", run.get("accounting", {}))
    books = "accounting ok" if check.get("ok") else \
        f"ACCOUNTING: {'; '.join(check.get('problems', [])) or 'not checked'}"
    if run.get("status") != "complete":
        print(f"[{n}/{total}] {run.get('run_id')}: FAILED ({run.get('failure')}); "
              f"{counts.get('received', 0)} requests recorded; {books}", flush=True)
        return
    summary = run.get("summary", {})
    print(f"[{n}/{total}] {run['run_id']}: SLA {summary.get('sla_attainment', 0):.1%}, "
          f"p90 {summary.get('latency_p90_s') or float('nan'):.2f} s, "
          f"{summary.get('throughput_rps') or 0:.2f} req/s, {summary.get('swaps')} swaps, "
          f"{counts.get('issued')} issued, unserved {counts.get('unserved')}, "
          f"{run.get('wall_time_s', 0):.0f} s; {books}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
