"""The traffic generator: send a seeded arrival schedule to the experiment server, open loop.

    python api_calls.py --pattern gamma --mean 8 --duration-s 1200
    python api_calls.py --pattern trace --trace-path AzureLLMInferenceTrace_conv.csv --mean 0

The whole schedule (times, models, prompts) is built from SEED before the first request, with
the same code the simulator uses; each request then leaves at its time whatever happened to the
earlier ones. At the end POST /stop tells the server how many requests were issued and waits
for its drain. Writes client.csv (one row per request sent) and schedule.csv into the server's
run directory (or RUN_DIR), and prints the totals. Prompts are read from WORKLOADS_DIR and sent,
never written or printed.
"""

import logging
import os
import sys
import time
from pathlib import Path

from sincere import architectures
from sincere.cli import parse_constants

URL = "http://127.0.0.1:5000"  # the experiment server
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


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from sincere.client import ServerUnavailable, send_schedule, wait_for_server
    from sincere.traffic import build_schedule, options_from_constants
    from sincere.workloads import read_workloads

    url = cfg.URL.rstrip("/")
    try:
        prompts = read_workloads(Path(cfg.WORKLOADS_DIR))
        schedule = build_schedule(cfg.PATTERN, cfg.MEAN, cfg.DURATION_S, cfg.SEED,
                                  cfg.MODEL_MIX, prompt_ids=sorted(prompts),
                                  **options_from_constants(cfg, cfg.PATTERN))
        health = wait_for_server(url, cfg.WAIT_S)
    except (FileNotFoundError, ValueError, TypeError, ServerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(schedule.models) - set(health.get("models", [])))
    if unknown:
        print(f"warning: the server does not serve {', '.join(unknown)}; those requests will "
              f"be refused (it serves {', '.join(health.get('models', []))})", file=sys.stderr)
    run_dir = Path(cfg.RUN_DIR or health.get("run_dir")
                   or f"client_{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    schedule.write_csv(run_dir / "schedule.csv")
    params = {"pattern": schedule.params["pattern"], "mean_rps": cfg.MEAN,
              "duration_s": cfg.DURATION_S, "seed": cfg.SEED, "repeat": cfg.REPEAT,
              "model_mix": schedule.params["model_mix"], "pattern_params": schedule.params,
              "workloads": len(prompts)}
    print(f"sending {len(schedule)} requests ({cfg.PATTERN}, mean {cfg.MEAN:g} req/s, "
          f"{cfg.DURATION_S:g} s) to {url}", flush=True)
    started = time.monotonic()
    try:
        result = send_schedule(url, schedule, prompts, client_csv=run_dir / "client.csv",
                               timeout_s=cfg.TIMEOUT_S, max_in_flight=cfg.MAX_IN_FLIGHT,
                               start_params=params, stop=cfg.STOP, stop_params=params)
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
    print(f"wrote {run_dir / 'client.csv'} and {run_dir / 'schedule.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
