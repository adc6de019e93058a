"""``GET /metrics``: the run's counters in Prometheus' text format, for the tools that scrape it.

Load generators such as AIPerf look for a server's ``/metrics`` (vLLM serves one) before and
after a benchmark; answering it keeps those probes from being recorded as refused requests of
the run, and lets the tool collect the server's own counts. Counts only, never text.
"""

from __future__ import annotations

from flask import Flask, Response

from sincere.access import KeyCheck
from sincere.serving.server import ExperimentServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition(server: ExperimentServer, in_flight: int, unauthorized: int = 0) -> str:
    """The run's counters: requests received, requests settled by status, requests waiting per
    model, calls in flight, calls refused for a missing or wrong API key (not requests of the
    run). ``received`` is a counter of its own: inside the counter split by status it would
    make ``sum(sincere_requests_total)`` count every request twice."""
    status = server.status()
    counts = dict(status["counts"])
    received = counts.pop("received", 0)
    lines = ["# HELP sincere_requests_received_total Requests the run received.",
             "# TYPE sincere_requests_received_total counter",
             f"sincere_requests_received_total {received}",
             "# HELP sincere_requests_total Requests of the run settled, by status.",
             "# TYPE sincere_requests_total counter"]
    lines += [f'sincere_requests_total{{status="{name}"}} {count}'
              for name, count in sorted(counts.items())]
    lines += ["# HELP sincere_queue_length Requests waiting in each model's queue.",
              "# TYPE sincere_queue_length gauge"]
    lines += [f'sincere_queue_length{{model="{model}"}} {length}'
              for model, length in sorted(status["queues"].items())]
    lines += ["# HELP sincere_requests_in_flight Calls waiting for their answer.",
              "# TYPE sincere_requests_in_flight gauge", f"sincere_requests_in_flight {in_flight}",
              "# HELP sincere_run_seconds Seconds since the run began (0 before).",
              "# TYPE sincere_run_seconds gauge", f"sincere_run_seconds {status['now_s']}",
              "# HELP sincere_unauthorized_total Calls refused for a missing or wrong API key "
              "(not requests of the run).",
              "# TYPE sincere_unauthorized_total counter",
              f"sincere_unauthorized_total {unauthorized}"]
    return "\n".join(lines) + "\n"


def register(app: Flask, server: ExperimentServer, key_check: KeyCheck | None = None) -> None:
    """Serve ``GET /metrics`` from ``app`` (with the refusals of ``key_check``, if any)."""
    in_flight = app.extensions["sincere_in_flight"]

    @app.get("/metrics")
    def metrics() -> Response:
        refused = key_check.refused if key_check is not None else 0
        return Response(exposition(server, in_flight.count, refused), content_type=CONTENT_TYPE)
