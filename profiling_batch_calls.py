"""Drive the batch-profiling server -> profiling_results/batch_profiling_<device>_<cc|noncc>_*.csv.

For each model, each batch size of BATCH_SIZES in ascending order (up to MAX_BATCH), RUNS runs:
ask profiling_batch_flask.py to run a batch and record its figures. A model's sweep stops at its
first out-of-memory (that row is kept, oom true), after MAX_BATCH, or when its share of
TIME_LIMIT_S is spent. Rows are written as they come, so a crash keeps what was measured; at the
end best_batch_<device>_<cc|noncc>_<stamp>.csv summarises each model (best batch = highest
throughput, largest batch that fit) and is printed. The key in API_KEY, when set, goes with
every call; an https:// URL is trusted by CA_FILE (or the usual CAs).
"""

import sys
import time
from pathlib import Path
from typing import Any

import requests

from sincere.cli import parse_constants
from sincere.traffic.api_modes import ServerUnavailable
from sincere.traffic.client import wait_for_server

URL = "http://127.0.0.1:5057"  # the profiling server (profiling_batch_flask.py)
CA_FILE = ""  # https URL: the certificate (or its CA) to trust ("" = the usual CAs)
MODELS = []  # aliases to profile (empty = every model the server has)
BATCH_SIZES = [1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 19, 23, 29, 32, 36, 41, 48, 53, 56, 60, 64, 68,
               72, 79, 83, 86, 89, 94, 100, 105, 109, 112, 120, 128, 136, 149, 167, 191, 211,
               233, 256, 307, 353, 409, 457, 512, 1024, 2048]  # the original study's sizes
RUNS = 3  # runs of each batch size
MAX_BATCH = 0  # largest batch size to try (0 = no bound but out-of-memory)
MAX_NEW_TOKENS = 50  # new tokens per prompt
WARMUP = 1  # untimed batches at the smallest size before a model's sweep
PROFILES_DIR = "profiling_results"  # where the CSVs go
DEVICE_NAME = ""  # device part of the file names ("" = the server's, e.g. cpu or h100)
TIME_LIMIT_S = 0.0  # no new batch size after this many seconds, shared among models (0 = none)
SEED = 0  # run r of every size draws its prompts with seed SEED + r
WAIT_S = 30.0  # wait this long for the server to answer /health
REQUEST_TIMEOUT_S = 3600.0  # give up on one batch after this long


def post_batch(url: str, model: str, batch_size: int, max_new_tokens: int, seed: int,
               timeout_s: float, headers: dict[str, str] | None = None,
               verify: bool | str = True) -> dict[str, Any]:
    """One /profile call (``headers``: the key's); raises RuntimeError with the server's
    message when it refuses."""
    response = requests.post(f"{url}/profile", timeout=timeout_s, headers=headers,
                             verify=verify, json={
                                 "model_alias": model, "batch_size": batch_size,
                                 "max_new_tokens": max_new_tokens, "seed": seed})
    if response.status_code != 200:
        try:
            message = response.json().get("error", "")
        except ValueError:
            message = response.text[:200]
        raise RuntimeError(f"HTTP {response.status_code} at batch {batch_size}: {message}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    """Sweep every model's batch sizes through the server and write the two CSVs."""
    cfg = parse_constants(globals(), argv)
    from sincere.access import bearer_headers, client_key, client_verify
    from sincere.profiles.files import measured_source, profile_path, timestamp
    from sincere.profiles.profiling import report_sweeps, run_sweeps, sweep_sizes

    url = cfg.URL.rstrip("/")
    try:
        headers, verify = bearer_headers(client_key()), client_verify(cfg.CA_FILE)
        health = wait_for_server(url, cfg.WAIT_S, verify=verify)
    except ServerUnavailable as exc:
        raise SystemExit(f"the profiling server does not answer: {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    models = list(cfg.MODELS) or list(health["models"])
    unknown = [m for m in models if m not in health["models"]]
    if unknown or not models:
        print(f"the server has no model {', '.join(unknown) or '(none at all)'}; it has: "
              f"{', '.join(health['models']) or 'none'}", file=sys.stderr)
        return 2
    sizes = sweep_sizes(cfg.BATCH_SIZES, cfg.MAX_BATCH)
    if not sizes or cfg.RUNS < 1:
        print("nothing to profile: no batch size within MAX_BATCH, or RUNS < 1", file=sys.stderr)
        return 2
    device = cfg.DEVICE_NAME or health.get("device_name") or "unknown"
    cc_mode = health.get("cc_mode", "unknown")
    stamp = timestamp()
    profiles_dir = Path(cfg.PROFILES_DIR)
    out_path = profile_path(profiles_dir, "batch_profiling", device, cc_mode, stamp)
    best_path = profile_path(profiles_dir, "best_batch", device, cc_mode, stamp)
    source = measured_source(health.get("hardware", device))
    print(f"batch profiling {', '.join(models)} on {health.get('hardware')} (cc_mode {cc_mode}):"
          f" sizes {sizes[0]}..{sizes[-1]}, {cfg.RUNS} runs, {cfg.MAX_NEW_TOKENS} new tokens"
          + (f", time limit {cfg.TIME_LIMIT_S:g} s" if cfg.TIME_LIMIT_S > 0 else ""), flush=True)

    def profile(model: str, batch_size: int, run: int) -> dict[str, Any]:
        return post_batch(url, model, batch_size, cfg.MAX_NEW_TOKENS, cfg.SEED + run,
                          cfg.REQUEST_TIMEOUT_S, headers, verify)

    started = time.monotonic()
    outcomes, summary = run_sweeps(profile, models, sizes, cfg.RUNS, cfg.MAX_NEW_TOKENS, source,
                                   out_path, best_path, time_limit_s=cfg.TIME_LIMIT_S,
                                   warmup=cfg.WARMUP,
                                   warm_each_size=health.get("decode") == "static",
                                   log=lambda line: print(line, flush=True))
    rows = sum(len(o.rows) for o in outcomes)
    print(f"wrote {out_path} ({rows} rows) and {best_path} in {time.monotonic() - started:.1f} s")
    return report_sweeps(outcomes, summary, lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
