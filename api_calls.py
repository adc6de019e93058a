"""The traffic generator: send a seeded arrival schedule to a server, open loop.

    python api_calls.py --pattern gamma --mean 8 --duration-s 1200
    python api_calls.py --pattern trace --trace-path AzureLLMInferenceTrace_conv.csv --mean 0
    OPENAI_API_KEY=... python api_calls.py --api openai-chat --url http://gpu-vm:8000 \
        --served-models llama3-8b=meta-llama/Llama-3.1-8B-Instruct --run-dir client_run
    API_KEY=... python api_calls.py --url https://cvm:5000 --ca-file cvm-cert.pem

The whole schedule (times, models, prompts) is built from SEED before the first request, with
the same code the simulator uses; each request then leaves at its time whatever happened to the
earlier ones. API says how: SINCERE's /inference, or OpenAI's completions or chat API, which any
OpenAI-compatible server speaks (sincere/traffic/api_modes.py). Against SINCERE's experiment server,
POST /start begins the run and POST /stop at the end tells it how many requests were issued and
waits for its drain; client.csv (one row per request sent) and schedule.csv go into the server's
run directory (or RUN_DIR). Against any other server there is no /start or /stop: the run
directory (RUN_DIR) is client-side, with a run.json of its own (sincere/runs/client_side.py).
Prompts are read from WORKLOADS_DIR and sent, never written or printed; the key is read from the
API_KEY environment variable (else OPENAI_API_KEY), sent with every call, and never written or
printed either. An https:// URL is trusted by CA_FILE (the server's self-signed certificate,
say) or the usual CAs; each request's TLS handshake is part of its client_latency_s.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from sincere.assets import architectures
from sincere.cli import parse_constants
from sincere.traffic.api_modes import ApiMode

URL = "http://127.0.0.1:5000"  # the server: SINCERE's experiment server, or any OpenAI-compatible
CA_FILE = ""  # https URL: the certificate (or its CA) to trust ("" = the usual CAs)
API = "sincere"  # how requests go: sincere (/inference), openai-completions or openai-chat
SERVED_MODELS = {}  # OpenAI modes: alias=served model name, where the server names it otherwise
MAX_TOKENS = 50  # OpenAI modes: new tokens asked for (at most the SINCERE server's MAX_NEW_TOKENS)
IGNORE_EOS = True  # OpenAI modes: send ignore_eos, so that exactly MAX_TOKENS come (vLLM, SGLang)
PATTERN = "gamma"  # arrival pattern: gamma, bursty, ramp, poisson, constant or trace
MEAN = 4.0  # mean request rate, requests per second (trace: 0 keeps the trace's own timing)
DURATION_S = 60.0  # how long requests are sent, seconds
SEED = 0  # arrival seed (the runner passes its base seed + the repeat)
REPEAT = 0  # repeat number, recorded in run.json
MODEL_MIX = dict(architectures.DEFAULT_MODEL_MIX)  # share of each model (alias=weight)
WORKLOADS_DIR = "workloads"  # prompts, one JSON file each (generate_workloads_jsonl.py)
RUN_DIR = ""  # where client.csv and schedule.csv go ("" = the server's run directory)
TIMEOUT_S = 1800.0  # a request not answered within this is recorded as a timeout
MAX_IN_FLIGHT = 4096  # sender threads = requests awaiting answers (keep above server MAX_QUEUE)
WAIT_S = 120.0  # how long to wait for the server to answer /health
STOP = True  # send POST /stop after the last request (ends the server's run)
GAMMA_SHAPE = 1.0  # gamma pattern: shape k (1 = Poisson; CV = 1/sqrt(k))
BURST_ON_S = 2.0  # bursty pattern: mean burst duration, seconds
BURST_OFF_S = 12.0  # bursty pattern: mean idle duration, seconds
BURST_PEAK_TO_MEAN = 5.0  # bursty pattern: rate inside a burst / mean rate
RAMP_PERIOD_S = 40.0  # ramp pattern: period of the triangle, seconds
RAMP_ALPHA = 0.75  # ramp pattern: rate swings between mean*(1-alpha) and mean*(1+alpha)
TRACE_PATH = ""  # trace pattern: Azure CSV or Mooncake JSONL to replay
EXTERNAL = False  # keep a client-side run (no /start, /stop) even if the server is SINCERE's
SLA = 40.0  # another server's run: the SLA its client-side sla_attainment is counted against
CC_MODE = ""  # another server's run: on or off, recorded when this machine cannot detect it


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from sincere.access import client_key, client_verify
    from sincere.assets.workloads import read_workloads
    from sincere.runs.client_side import cc_mode_of
    from sincere.runs.params import traffic_params
    from sincere.traffic.api_modes import ServerUnavailable
    from sincere.traffic.client import find_server, send_schedule
    from sincere.traffic.patterns import options_from_constants
    from sincere.traffic.schedule import build_schedule

    url = cfg.URL.rstrip("/")
    try:
        api = ApiMode(cfg.API, dict(cfg.SERVED_MODELS), cfg.MAX_TOKENS, cfg.IGNORE_EOS,
                      client_key(), str(cfg.CA_FILE))
        client_verify(api.ca_file)  # a CA file that is not there is said now
        prompts = read_workloads(Path(cfg.WORKLOADS_DIR))
        schedule = build_schedule(cfg.PATTERN, cfg.MEAN, cfg.DURATION_S, cfg.SEED,
                                  cfg.MODEL_MIX, prompt_ids=sorted(prompts),
                                  **options_from_constants(cfg, cfg.PATTERN))
        health, served = find_server(url, api, cfg.WAIT_S)
        health = None if cfg.EXTERNAL else health
        cc_mode = None if health else cc_mode_of(url, cfg.CC_MODE)
    except (FileNotFoundError, ValueError, TypeError, ServerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unknown = sorted({m for m in schedule.models if api.served_name(m) not in served})
    if unknown:
        print(f"warning: the server does not serve {', '.join(unknown)} (as "
              f"{', '.join(api.served_name(m) for m in unknown)}); those requests will be "
              f"refused (it serves {', '.join(served) or 'nothing'})", file=sys.stderr)
    run_dir = Path(cfg.RUN_DIR or (health or {}).get("run_dir")
                   or f"client_{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    schedule.write_csv(run_dir / "schedule.csv")
    params = traffic_params(pattern=schedule.params["pattern"], pattern_params=schedule.params,
                            mean_rps=cfg.MEAN, duration_s=cfg.DURATION_S, seed=cfg.SEED,
                            repeat=cfg.REPEAT, model_mix=schedule.params["model_mix"],
                            workloads=len(prompts))
    print(f"sending {len(schedule)} requests ({cfg.PATTERN}, mean {cfg.MEAN:g} req/s, "
          f"{cfg.DURATION_S:g} s) to {url} ({api.name}"
          f"{'' if health else ', not a SINCERE server: client-side run'})", flush=True)
    started = time.monotonic()
    started_epoch_s = time.time()
    try:
        result = send_schedule(url, schedule, prompts, client_csv=run_dir / "client.csv",
                               timeout_s=cfg.TIMEOUT_S, max_in_flight=cfg.MAX_IN_FLIGHT,
                               start_params=params, stop=cfg.STOP, stop_params=params,
                               api=api, control=health is not None)
    except ServerUnavailable as exc:  # /start refused (a wrong key): nothing was sent
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: client.csv holds the requests answered so far", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)  # sender threads may still wait on the server: do not join them
    rows = result.rows
    by_status: dict[str, int] = {}
    for row in rows:
        key = str(row["http_status"]) if row["http_status"] is not None else row["error"]
        by_status[key] = by_status.get(key, 0) + 1
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))
    print(f"{len(rows)} requests answered in {time.monotonic() - started:.1f} s ({summary}); "
          f"dispatcher at most {result.max_send_lateness_s * 1000:.1f} ms late", flush=True)
    if result.stop_answer:
        print(f"server: {result.stop_answer.get('accounting')}", flush=True)
    if cc_mode is not None:  # another server: this run's own run.json, from client.csv
        run = write_client_run(run_dir, cfg, api, params, len(schedule), served, cc_mode,
                               started_epoch_s)
        print(f"client-side run ({run['environment']['cc_mode']}): {run['accounting']}",
              flush=True)
    print(f"wrote {run_dir / 'client.csv'} and {run_dir / 'schedule.csv'}")
    return 0


def write_client_run(run_dir: Path, cfg: argparse.Namespace, api: ApiMode, params: dict,
                     issued: int, served: list[str], cc_mode: tuple[str, str],
                     started_epoch_s: float) -> dict:
    """run.json of a run against a server that is not SINCERE's (no key in it)."""
    from sincere.access import is_https
    from sincere.files import write_json_atomic
    from sincere.runs.client_side import ENGINE, client_run_json, server_params
    from sincere.runs.params import run_params
    from sincere.runs.rundirs import REQUIRED_CLIENT_COLUMNS, read_client

    run = client_run_json(
        run_dir.name, run_params(
            params, strategy="external", strategy_params=server_params(
                cfg.URL, api.name, api.served_models, cfg.MODEL_MIX, api.ignore_eos),
            sla_s=cfg.SLA, max_new_tokens=api.max_tokens, models=sorted(cfg.MODEL_MIX),
            engine=ENGINE, tls=is_https(cfg.URL)),
        {"cc_mode": cc_mode[0], "cc_mode_source": cc_mode[1], "server_url": cfg.URL,
         "server_models": served},
        read_client(run_dir, REQUIRED_CLIENT_COLUMNS), issued, started_epoch_s)
    write_json_atomic(run_dir / "run.json", run)
    return run


if __name__ == "__main__":
    sys.exit(main())
