"""The batch-profiling server: takes a batch, runs it through the engine, returns its figures.

    GET  /health    -> {"status": "ok", "pid", "models", "resident", "device_name", "cc_mode", ...}
    POST /profile   {"model_alias": "llama3-8b", "batch_size": 8, "max_new_tokens": 50,
                     "prompt_ids": [...] (optional; else batch_size prompts are drawn from
                     WORKLOADS_DIR), "seed": 0 (optional: which prompts are drawn)}
                    -> {"processing_time_s", "throughput_rps", "output_tokens_per_s",
                        "prompt_tokens_mean", "peak_gpu_mem_gib", "oom", monitor means, ...}
    POST /shutdown  -> stops the server

The model is loaded (the resident one unloaded first) when a batch asks for another one; the load
is not part of the batch's time. ``oom`` is true when the batch ran out of memory at its full size
(the engine then split it). Batches run one at a time. No prompt or generated text is ever logged
or returned. profiling_batch_calls.py drives it; run_profiling.sh starts both.

It listens on loopback unless HOST says otherwise; beyond loopback it needs API_KEY in the
environment (or ALLOW_NO_KEY), and then every call but /health needs `Authorization: Bearer
<key>` (401 otherwise, as the experiment server does). TLS_CERT and TLS_KEY serve HTTPS.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from sincere.cli import parse_constants
from sincere.serving.inputs import InputError

HOST = "127.0.0.1"  # address to listen on (beyond loopback: set API_KEY in the environment)
ALLOW_NO_KEY = False  # listen beyond loopback without API_KEY (an open door, on purpose)
TLS_CERT = ""  # serve HTTPS with this certificate (PEM; "" = plain HTTP)...
TLS_KEY = ""  # ...and its private key (PEM)
PORT = 5057  # port to listen on
MODELS_DIR = "models"  # folder of model subfolders (download_models.py)
WORKLOADS_DIR = "workloads"  # folder of prompt JSON files (generate_workloads_jsonl.py)
MAX_NEW_TOKENS = 50  # new tokens per prompt when a request names none
OOM_BATCH_LIMIT = 0  # testing knob: batches larger than this raise out-of-memory (0 = none)
DEVICE = ""  # torch device ("" = cuda when there is one, else cpu)
CPU_THREADS = 0  # torch threads on a CPU device (0 = as the server: the engine's cores)
ENGINE_PROCESS = True  # the engine in a process of its own, as the server runs it
PIN_CORES = True  # split the cores between this process and the engine's, as the server does
DEVICE_NAME = ""  # device part of the profile's file name ("" = cpu, or the GPU's short name)
DECODE = "eager"  # batch engine: eager generate, or static (static KV cache + torch.compile)
COMPILE_BACKEND = "inductor"  # torch.compile backend of the static engine
PROMPT_BUCKETS = [128, 512]  # static engine: prompt token buckets, as the server's
MONITOR_PERIOD_S = 0.5  # sampling period of the CPU/GPU monitor during batches, seconds
MONITOR_CSV = ""  # also write every monitor sample to this CSV ("" = keep them in memory only)
SEED = 0  # seed of the prompt draw when a request gives none
MAX_BATCH_SIZE = 4096  # refuse larger batches (a typo guard)
STOP_WAIT_S = 5.0  # on SIGTERM or Ctrl-C, wait this long for a running batch before exiting

log = logging.getLogger("profiling_batch_flask")


def _positive_int(body: dict[str, Any], key: str, default: int | None, limit: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise InputError(f"{key} must be an integer from 1 to {limit}")
    return value


def parse_profile_request(body: Any, models: list[str], prompt_ids: set[str],
                          default_max_new_tokens: int, max_batch_size: int) -> dict[str, Any]:
    """Check a /profile body; the model, batch size, tokens, prompt ids (or None) and seed."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    unknown = set(body) - {"model_alias", "batch_size", "prompt_ids", "max_new_tokens", "seed"}
    if unknown:
        raise InputError(f"unknown fields: {', '.join(sorted(unknown))}")
    model = body.get("model_alias")
    if not isinstance(model, str) or model not in models:
        raise InputError(f"model_alias must be one of: {', '.join(models) or '(no models)'}")
    ids = body.get("prompt_ids")
    if ids is not None:
        if (not isinstance(ids, list) or not ids
                or not all(isinstance(i, str) for i in ids)):
            raise InputError("prompt_ids must be a non-empty list of prompt ids (strings)")
        if len(ids) > max_batch_size:
            raise InputError(f"at most {max_batch_size} prompt_ids")
        missing = [i for i in ids if i not in prompt_ids]
        if missing:
            raise InputError(f"{len(missing)} unknown prompt ids, e.g. {missing[0][:40]!r}")
    batch_size = _positive_int(body, "batch_size", len(ids) if ids else None, max_batch_size)
    if ids is not None and batch_size != len(ids):
        raise InputError(f"batch_size {batch_size} differs from the {len(ids)} prompt_ids")
    max_new_tokens = _positive_int(body, "max_new_tokens", default_max_new_tokens, 100_000)
    seed = body.get("seed", None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise InputError("seed must be a non-negative integer")
    return {"model": model, "batch_size": batch_size, "prompt_ids": ids,
            "max_new_tokens": max_new_tokens, "seed": seed}


def create_app(engine: Any, prompts: dict[str, str], monitor: Any = None,
               info: dict[str, Any] | None = None, seed: int = 0,
               max_batch_size: int = MAX_BATCH_SIZE,
               shutdown: Callable[[], None] | None = None,
               clock: Callable[[], float] = time.perf_counter, api_key: str = "") -> Flask:
    """The Flask app over an engine, the prompts by id and a monitor (or None); ``clock``
    times each batch; with ``api_key``, every call but /health needs it."""
    from sincere.access import KeyCheck
    from sincere.engine.engine import EngineError
    from sincere.profiles.profiling import BatchFailed, draw_prompt_ids, measure_batch
    from sincere.serving.guard import require_key

    app = Flask(__name__)
    if api_key:
        require_key(app, KeyCheck(api_key))
    lock = threading.Lock()  # one batch (and one load) at a time
    app.extensions["batch_lock"] = lock  # main() waits on it before unloading
    all_ids = sorted(prompts)
    info = dict(info or {})
    draws = {"count": 0}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(InputError)
    def bad_request(exc: InputError):
        return jsonify(error=exc.message), exc.http_status

    @app.get("/health")
    def health():
        return jsonify(status="ok", pid=os.getpid(), models=engine.available_models(),
                       resident=engine.resident, prompts=len(all_ids),
                       max_new_tokens=engine.max_new_tokens, **info)

    @app.post("/profile")
    def profile():
        body = request.get_json(silent=True)
        ask = parse_profile_request(body, engine.available_models(), set(all_ids),
                                    engine.max_new_tokens, max_batch_size)
        with lock:
            load_s = None
            if engine.resident != ask["model"]:
                if engine.resident is not None:
                    engine.unload()
                load_s = engine.load(ask["model"]).seconds
            ids = ask["prompt_ids"]
            if ids is None:
                batch_seed = ask["seed"] if ask["seed"] is not None else seed + draws["count"]
                draws["count"] += 1
                ids = draw_prompt_ids(all_ids, ask["batch_size"], batch_seed)
            figures = measure_batch(engine, [prompts[i] for i in ids], ask["max_new_tokens"],
                                    monitor, clock)
        log.info("%s batch %d: %.3f s, oom %s", ask["model"], ask["batch_size"],
                 figures["processing_time_s"], figures["oom"])
        return jsonify(model_alias=ask["model"], load_s=load_s, **figures)

    @app.post("/shutdown")
    def shutdown_route():
        if shutdown is None:
            return jsonify(error="this server cannot be shut down over HTTP"), 501
        shutdown()
        return jsonify(status="shutting down")

    @app.errorhandler(Exception)
    def server_error(exc: Exception):
        # The message only of the project's own errors, which carry counts and class names;
        # another library's message might quote the input, so only its class is told.
        told = f": {str(exc)[:200]}" if isinstance(exc, EngineError | BatchFailed) else ""
        log.error("request failed: %s%s", type(exc).__name__, told)
        return jsonify(error=f"{type(exc).__name__}{told}"), 500

    return app


def main(argv: list[str] | None = None) -> int:
    """Start the engine, the monitor and the server; serve until /shutdown, SIGTERM or Ctrl-C."""
    cfg = parse_constants(globals(), argv)
    from sincere.access import server_door
    from sincere.assets.workloads import read_workloads
    from sincere.engine.process import start_engine
    from sincere.host.environment import environment_block
    from sincere.host.monitor import Monitor
    from sincere.profiles.files import device_name, hardware_name
    from sincere.serving.http_server import make_http_server, server_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:  # before the engine starts: a server that must not start says so at once
        api_key, tls = server_door(cfg, Path(__file__).name, say=print)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = environment_block()
    # The layout the server runs in: the profile's batch times are then the server's.
    engine = start_engine(cfg.ENGINE_PROCESS, dict(
        models_dir=Path(cfg.MODELS_DIR), device=cfg.DEVICE or None, host_cache=True,
        cc_mode=env["cc_mode"], oom_batch_limit=cfg.OOM_BATCH_LIMIT or None,
        max_new_tokens=cfg.MAX_NEW_TOKENS, decode=cfg.DECODE,
        compile_backend=cfg.COMPILE_BACKEND, prompt_buckets=cfg.PROMPT_BUCKETS),
        cfg.CPU_THREADS, pin=cfg.PIN_CORES)
    if not engine.available_models():
        print(f"no models in {cfg.MODELS_DIR}: run download_models.py first", file=sys.stderr)
        return 2
    prompts = read_workloads(Path(cfg.WORKLOADS_DIR))
    info = {"device": engine.device.type,
            "device_name": cfg.DEVICE_NAME or device_name(env, engine.device.type, cfg.DECODE),
            "hardware": hardware_name(env), "cc_mode": env["cc_mode"], "decode": cfg.DECODE,
            "dtype": str(engine.dtype).removeprefix("torch.")}
    monitor = Monitor(cfg.MONITOR_CSV or None, period_s=cfg.MONITOR_PERIOD_S)
    server_box: dict[str, Any] = {}

    def shutdown() -> None:  # serve_forever returns once this has run in another thread
        threading.Thread(target=server_box["server"].shutdown, daemon=True).start()

    app = create_app(engine, prompts, monitor, info, seed=cfg.SEED, shutdown=shutdown,
                     api_key=api_key)
    server = server_box["server"] = make_http_server(cfg.HOST, cfg.PORT, app, tls)
    monitor.start()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: shutdown())
    print(f"profiling server on {server_url(server)} (pid {os.getpid()}): "
          f"{', '.join(engine.available_models())} on {info['hardware']}, {len(prompts)} prompts",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    batch_done = app.extensions["batch_lock"].acquire(timeout=cfg.STOP_WAIT_S)
    monitor.stop()
    if batch_done:
        engine.unload()
        if cfg.ENGINE_PROCESS:
            engine.close()
    print("profiling server stopped" + ("" if batch_done else " during a batch"), flush=True)
    if not batch_done:
        # A request thread is still inside torch: interpreter shutdown under it would abort.
        logging.shutdown()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
