"""What HTTPS adds to each request's client latency: the TLS handshake of every connection.

    python benchmarks/bench_tls.py                     # 200 calls a scheme, 3 rounds
    python benchmarks/bench_tls.py --calls 500 --rounds 5

Two servers, each in its own process, serve the same small Flask app on this project's HTTP
server (``sincere.serving.http_server``): one over plain HTTP, one over HTTPS with a self-signed
certificate made here with openssl (as one is made inside the CVM). This process calls
``GET /health`` on each, one call after another, as the generator sends (a ``requests`` session,
the certificate as the CA file), the two schemes alternating round by round. The server closes
every connection after its answer, so each HTTPS call makes a full handshake: the difference of
the medians is what TLS adds to a request's client latency here, on loopback (a network adds its
round trips on top). Needs openssl.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO_ROOT))

from sincere.access import make_certificate  # noqa: E402
from sincere.cli import parse_constants  # noqa: E402

CALLS = 200  # calls of each scheme in a round, one after another
ROUNDS = 3  # rounds; the schemes alternate
SERVE = False  # internal: serve the app (the benchmark starts two servers with this)
TLS_CERT = ""  # internal: the served app's certificate ("" = plain HTTP)
TLS_KEY = ""  # internal: its private key


def serve(cert: str, key: str) -> None:
    """Serve a /health app on a free port of 127.0.0.1; print the port, serve until killed."""
    from flask import Flask, jsonify

    from sincere.access import server_tls
    from sincere.serving.http_server import make_http_server

    app = Flask("bench_tls")

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    httpd = make_http_server("127.0.0.1", 0, app, server_tls(cert, key))
    print(httpd.server_port, flush=True)
    httpd.serve_forever()


def time_calls(url: str, calls: int, verify: bool | str) -> list[float]:
    """Seconds of each of ``calls`` GETs of ``url``, one after another, on one session."""
    import requests

    session = requests.Session()
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        session.get(url, verify=verify, timeout=30).raise_for_status()
        took.append(time.perf_counter() - started)
    return took


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv)
    if cfg.SERVE:
        serve(cfg.TLS_CERT, cfg.TLS_KEY)
        return 0
    if shutil.which("openssl") is None:
        print("error: openssl is needed to make the certificate", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        cert, key = make_certificate(Path(folder), days=1)
        servers, urls = [], {}
        try:
            for scheme, flags in (("http", []), ("https", ["--tls-cert", str(cert),
                                                          "--tls-key", str(key)])):
                process = subprocess.Popen([sys.executable, __file__, "--serve", "true", *flags],
                                           stdout=subprocess.PIPE, text=True)
                servers.append(process)
                urls[scheme] = f"{scheme}://127.0.0.1:{process.stdout.readline().strip()}/health"
            took: dict[str, list[float]] = {"http": [], "https": []}
            for _ in range(cfg.ROUNDS):
                for scheme, verify in (("http", True), ("https", str(cert))):
                    took[scheme] += time_calls(urls[scheme], cfg.CALLS, verify)
        finally:
            for process in servers:
                process.kill()
                process.wait()
    median = {scheme: statistics.median(values) * 1000 for scheme, values in took.items()}
    for scheme, values in took.items():
        print(f"{scheme:5}: {len(values)} calls, median {median[scheme]:.2f} ms, "
              f"p90 {statistics.quantiles(values, n=10)[-1] * 1000:.2f} ms")
    print(f"TLS adds {median['https'] - median['http']:.2f} ms to a call's median "
          f"({median['https'] / median['http']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
