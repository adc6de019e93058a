"""A grid against a server that is not SINCERE's (``run_experiments.py`` with ``SERVER_URL``).

The server is already running, wherever the user runs it (vLLM, SGLang, TGI, or SINCERE's own),
so each run starts only the generator (api_calls.py with ``EXTERNAL``): the same schedules,
open loop, its client.csv and schedule.csv, and a client-side run.json
(``sincere.runs.client_side``) with the CC mode of the server's machine, detected or as the user
gave it (``CC_MODE``). The server's own scheduling is what is measured, so the grid has no
strategies: its run ids begin with ``external``. Runs are staged and kept as ``sincere.grid.runner``
keeps real runs.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from sincere.access import is_https
from sincere.grid.children import Child, script_argv
from sincere.grid.points import GridPoint
from sincere.grid.runner import PARTIAL_DIR, RunSpec, keep_run
from sincere.runs.accounting import check_client_run
from sincere.runs.client_side import ENGINE, server_params
from sincere.runs.identity import with_identity
from sincere.runs.params import run_params, traffic_params
from sincere.runs.rundirs import RunDirError, read_run_json
from sincere.traffic.patterns import pattern_options

STRATEGY = "external"  # the grid's strategy label: the server schedules as it does


def external_points(patterns: Sequence[str], means_rps: Sequence[float],
                    slas_s: Sequence[float], repeats: int) -> list[GridPoint]:
    """Every (pattern, rate, SLA, repeat), in the order of ``grid.expand_grid``. The SLA changes
    only what counts as met, so give one SLA unless the same traffic should run again."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    return [GridPoint(STRATEGY, p, float(m), float(sla), r)
            for r, p, m, sla in itertools.product(range(repeats), patterns, means_rps, slas_s)]


def external_params(point: GridPoint, spec: RunSpec, server_url: str) -> dict[str, Any]:
    """run.json's ``params`` as api_calls.py will write them for this run, known before it runs:
    the grid compares their identity with a finished run's."""
    generator = spec.generator_options
    mix = generator.get("MODEL_MIX") or {}
    traffic = traffic_params(
        pattern=point.pattern,
        pattern_params={name: generator[name.upper()] for name in pattern_options(point.pattern)
                        if name.upper() in generator},
        mean_rps=point.mean_rps, duration_s=spec.duration_s, seed=point.seed(spec.base_seed),
        repeat=point.repeat, model_mix=mix)
    return run_params(
        traffic, strategy=STRATEGY,
        strategy_params=server_params(server_url, generator.get("API", "sincere"),
                                      dict(generator.get("SERVED_MODELS") or {}), mix,
                                      generator.get("IGNORE_EOS", True)),
        sla_s=point.sla_s, max_new_tokens=generator.get("MAX_TOKENS"), models=sorted(mix),
        engine=ENGINE, tls=is_https(server_url))


def run_external_point(point: GridPoint, spec: RunSpec, server_url: str,
                       log=print) -> dict[str, Any]:
    """Send one grid point's traffic to ``server_url``; returns its run.json (status complete
    or failed). KeyboardInterrupt stops the generator and leaves the staged run to be redone."""
    staging = spec.results_dir / PARTIAL_DIR / point.run_id
    final = spec.results_dir / point.run_id
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    argv = script_argv("api_calls.py", {
        **spec.generator_options, "URL": server_url, "PATTERN": point.pattern,
        "MEAN": point.mean_rps, "DURATION_S": spec.duration_s,
        "SEED": point.seed(spec.base_seed), "REPEAT": point.repeat, "RUN_DIR": staging,
        "SLA": point.sla_s, "EXTERNAL": True, "WAIT_S": spec.start_timeout_s})
    started = time.monotonic()
    reason = ""
    generator = Child.start("generator", argv, staging / "generator.log")
    try:
        try:
            code = generator.process.wait(spec.limit_s())
            if code != 0:
                reason = f"the generator failed (exit code {code})"
        except subprocess.TimeoutExpired:
            reason = "the run took longer than its time limit"
    finally:
        generator.stop()
    check = check_client_run(staging)
    try:
        run = read_run_json(staging)
    except RunDirError:
        run = with_identity({"run_id": point.run_id, "side": "client",
                             "params": external_params(point, spec, server_url),
                             "environment": {}})
        reason = reason or "the generator wrote no readable run.json"
    if reason:
        run.update(status="failed", failure=reason)
        log(f"  {point.run_id}: FAILED: {reason}; see {final}/generator.log")
    run["accounting_check"] = check
    run["wall_time_s"] = round(time.monotonic() - started, 3)
    keep_run(staging, final, run)
    return run
