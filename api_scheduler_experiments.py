"""The experiment server: a Flask inference server that batches requests by a scheduling strategy.

    python api_scheduler_experiments.py --mode BestBatch+Timer --sla 40
    curl -s localhost:5000/inference -H 'Content-Type: application/json' \\
         -d '{"prompt": "Hello", "model_alias": "llama3-8b"}'

One run per process: requests wait in per-model queues; one scheduler thread asks the strategy
(MODE, the same objects the simulator uses) which batch to run, swaps models (one on the GPU at a
time, the others kept in host RAM) and answers each request when its batch is done. POST /stop
(api_calls.py sends it) drains the queues and writes the run directory: requests.csv,
batches.csv, monitor.csv and run.json. See sincere/serving/app.py for every endpoint; the
OpenAI-compatible ones (/v1/completions, /v1/chat/completions, /v1/models) are in
sincere/serving/openai_api.py. A run that no /start began (a standard load generator's) ends after
IDLE_STOP_S without requests, or at Ctrl-C / SIGTERM, and drains as after /stop.

With API_KEY in the environment (never a flag: it would show on the command line), every call
but /health needs `Authorization: Bearer <key>`; a call without it gets 401, is counted in
/metrics and is not a request of the run. A HOST beyond loopback without a key refuses to start
unless ALLOW_NO_KEY. TLS_CERT and TLS_KEY serve HTTPS. See docs/server.md, "From another machine".
"""

import logging
import signal
import sys
import threading
import time
from pathlib import Path

from sincere.cli import parse_constants

MODE = "BestBatch+Timer"  # scheduling strategy, as typed (BestBatch, SelectBatch+Timer, ...)
SLA = 40.0  # SLA, seconds from arrival to completion
PROFILES = "auto"  # profile set (<device>_<cc|noncc>); auto: this device and CC mode's newest
PROFILES_DIR = "profiling_results"  # folder of model_loading_times_*.csv / batch_profiling_*.csv
MODELS_DIR = "models"  # folder of model subfolders (download_models.py)
MODELS = []  # aliases to serve (empty: every model folder that has a profile)
MAX_NEW_TOKENS = 50  # new tokens per request
RESULTS_DIR = "results"  # the run directory goes under here...
RUN_ID = ""  # ...with this name ("" = <strategy>__sla<SLA>__<date-time>)
RUN_DIR = ""  # or exactly here (overrides RESULTS_DIR and RUN_ID; run_experiments.py sets it)
HOST = "127.0.0.1"  # address to listen on (0.0.0.0 to serve other machines: set API_KEY)
ALLOW_NO_KEY = False  # listen beyond loopback without API_KEY (an open door, on purpose)
TLS_CERT = ""  # serve HTTPS with this certificate (PEM; "" = plain HTTP)...
TLS_KEY = ""  # ...and its private key (PEM)
PORT = 5000  # port to listen on (0 = a free one)
PORT_FILE = ""  # write the port listened on into this file ("" = none; run_experiments.py sets it)
DRAIN_TIMEOUT_S = 600.0  # after /stop, serve the queues for at most this long
MAX_QUEUE = 3000  # queued requests beyond this are refused with 429 and Retry-After
MAX_PROMPT_CHARS = 32000  # longer prompts are refused (413)
MAX_BODY_BYTES = 262144  # larger request bodies are refused (413)
STD_FACTOR = 1.0  # k: the scheduler plans load time as mean + k * std
MARGIN_S = 1.0  # safety margin of the timers, seconds
SHED_LATE = False  # shed requests that can no longer meet their SLA (always on for MaxGoodput)
MAX_QUEUE_DELAY_S = 1.0  # Dynamic+Delay: longest wait of the oldest request, seconds
RATE_WINDOW_S = 60.0  # SelectBatch+Timer: window of the arrival-rate estimate, seconds
HOST_CACHE = True  # keep every served model's weights in host RAM: a swap is a copy to the GPU
ALLOW_PROFILE_MISMATCH = False  # serve with a profile of another CC mode or load path (recorded)
DEVICE = ""  # torch device ("" = cuda when there is one, else cpu)
CPU_THREADS = 0  # torch threads on a CPU device (0 = the engine's cores; all but one unpinned)
ENGINE_PROCESS = True  # run the engine in a process of its own: request threads never stall it
PIN_CORES = True  # split the cores between this process (HTTP, scheduler) and the engine's
DECODE = "eager"  # batch engine: eager generate, or static (static KV cache + torch.compile)
COMPILE_BACKEND = "inductor"  # torch.compile backend of the static engine
WARM_UP = True  # static engine: compile each model for all its shapes before serving
PROMPT_BUCKETS = [128, 512]  # static engine: prompt token buckets (cache = bucket + new tokens)
MONITOR_PERIOD_S = 0.5  # CPU/GPU sampling period of monitor.csv, seconds
EXIT_AFTER_STOP = True  # exit once /stop has drained the queues and written the run
IDLE_STOP_S = 0.0  # a run begun without /start ends after this long without requests (0 = never)
OOM_BATCH_LIMIT = 0  # testing knob: batches larger than this raise out-of-memory (0 = none)

log = logging.getLogger("api_scheduler_experiments")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from sincere.access import server_door

    try:  # before anything slow: a server that must not start says so at once
        api_key, tls = server_door(cfg, Path(__file__).name, say=print)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from sincere.engine.process import start_engine
    from sincere.engine.static_decode import batch_buckets
    from sincere.files import write_text_atomic
    from sincere.host.environment import environment_block, format_environment
    from sincere.profiles.selection import profile_mismatches, resolve_profiles
    from sincere.serving.app import create_app
    from sincere.serving.experiment import build_server, resolve_models, run_directory
    from sincere.serving.http_server import make_http_server, server_url
    from sincere.serving.inputs import Limits
    from sincere.serving.run_end import RunEnd

    env = environment_block()
    print(format_environment(env), flush=True)
    device = torch.device(cfg.DEVICE or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        profiles = resolve_profiles(cfg.PROFILES, Path(cfg.PROFILES_DIR), env, device.type,
                                    cfg.STD_FACTOR, cfg.DECODE)
        # Swaps copy the way the profile measured fastest here (sincere.engine.load_paths).
        copy_mode = next((p.copy_mode for p in profiles.models.values() if p.copy_mode), None)
        engine = start_engine(cfg.ENGINE_PROCESS, dict(
            models_dir=Path(cfg.MODELS_DIR), device=str(device), host_cache=cfg.HOST_CACHE,
            cc_mode=env["cc_mode"], oom_batch_limit=cfg.OOM_BATCH_LIMIT or None,
            max_new_tokens=cfg.MAX_NEW_TOKENS, decode=cfg.DECODE,
            compile_backend=cfg.COMPILE_BACKEND, prompt_buckets=cfg.PROMPT_BUCKETS,
            copy_mode=copy_mode), cfg.CPU_THREADS, pin=cfg.PIN_CORES)
        print("engine: " + (f"its own process (pid {engine.pid}"
                            + (f"; cores {engine.cores})" if engine.cores else ")")
                            if cfg.ENGINE_PROCESS else "in this process"), flush=True)
        models = resolve_models(cfg.MODELS, engine, profiles)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mismatches = profile_mismatches(profiles, env, cfg.HOST_CACHE, models)
    if mismatches:
        print("".join(f"{'warning' if cfg.ALLOW_PROFILE_MISMATCH else 'error'}: {problem}\n"
                      for problem in mismatches), end="", file=sys.stderr)
        if not cfg.ALLOW_PROFILE_MISMATCH:
            print("error: the timers would be planned on times this server does not have; "
                  "fix the above, or set --allow-profile-mismatch true (run.json records it)",
                  file=sys.stderr)
            return 2
    print(f"swaps copy {engine.copy_mode}"
          + (" (the profile's choice)" if copy_mode else " (the default; the profile names none)"),
          flush=True)
    unreadable = {}  # a model that cannot be read fails its requests; the others are served
    for model in models if cfg.HOST_CACHE else []:
        try:
            read_s = engine.prefetch(model)
        except Exception as exc:  # noqa: BLE001 - any failure to read the folder
            unreadable[model] = type(exc).__name__
            print(f"error: {model} could not be read ({type(exc).__name__}); its requests "
                  "will fail", file=sys.stderr, flush=True)
            continue
        pinning = engine.pinning(model)
        print(f"host cache: {model} read in {read_s - pinning.seconds:.2f} s"
              + (f", {pinning.nbytes / 1e9:.2f} GB pinned ({pinning.how}) in "
                 f"{pinning.seconds:.2f} s" if pinning.nbytes else ""), flush=True)
    readable = [m for m in models if m not in unreadable]
    # Static engine: each model compiled for its best batch and a few below it.
    engine.set_batch_buckets({m: batch_buckets(profiles[m].best_batch(cfg.MAX_NEW_TOKENS))
                              for m in readable})
    if cfg.HOST_CACHE:  # device memory for the largest model and shape: no swap allocates
        print(f"reserved {engine.reserve(readable) / 1e9:.3f} GB on {engine.device}",
              flush=True)
    for model in readable if cfg.DECODE == "static" and cfg.WARM_UP else []:
        engine.load(model)
        print(f"warm-up: {model} compiled in {engine.warm_up():.1f} s", flush=True)
        engine.unload()
    run_dir = run_directory(cfg.RUN_DIR, cfg.RESULTS_DIR, cfg.RUN_ID, cfg.MODE, cfg.SLA)
    server = build_server(cfg, engine, profiles, models, run_dir, env,
                          api_key_required=bool(api_key))
    for model, reason in unreadable.items():
        server.mark_broken(model, reason)
    app = create_app(server, Limits(cfg.MAX_PROMPT_CHARS, cfg.MAX_BODY_BYTES),
                     info={"cc_mode": env["cc_mode"], "device": engine.device.type,
                           "profiles": Path(profiles.loading_file).name},
                     api_key=api_key)
    run_end = RunEnd(server, app, cfg.IDLE_STOP_S)
    httpd = make_http_server(cfg.HOST, cfg.PORT, app, tls)
    if cfg.PORT_FILE:
        write_text_atomic(Path(cfg.PORT_FILE), str(httpd.server_port))
    server.start()
    run_end.start()

    def on_signal(signum: int, _frame: object) -> None:
        if server.finished or getattr(on_signal, "seen", False):
            sys.exit(128 + signum)  # a second signal: leave now
        on_signal.seen = True  # type: ignore[attr-defined]
        print(f"signal {signum}: {run_end.on_signal()}", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def shut_down_when_finished() -> None:
        server.wait_finished()
        app.extensions["sincere_in_flight"].wait_zero(30.0)  # let the last answers go out
        time.sleep(0.1)
        httpd.shutdown()

    if cfg.EXIT_AFTER_STOP:
        threading.Thread(target=shut_down_when_finished, name="shutdown", daemon=True).start()
    print(f"serving {', '.join(models)} with {cfg.MODE}, SLA {cfg.SLA:g} s, profiles "
          f"{Path(profiles.loading_file).name} on {server_url(httpd)} -> {run_dir}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        if not server.finished:
            server.abort("interrupted")
            server.wait_finished(60.0)
        server.close()
        engine.unload()
        if cfg.ENGINE_PROCESS:
            engine.close()
    run = server.run_json or {}
    print(f"run {run.get('status', 'unfinished')}: {run.get('accounting')} -> {run_dir}",
          flush=True)
    return 0 if run.get("status") == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
