"""The HTTP server both Flask apps are served by (the experiment server's and the profiling one).

werkzeug's threaded WSGI server (a thread per connection) with a deep listen backlog, so that a
burst of arrivals waits in the kernel rather than being refused, and without an access-log line
per request (thousands a run); errors are still logged. Imports werkzeug only, so that the
profiling app can use it without the experiment server.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

LISTEN_BACKLOG = 4096  # connections the kernel holds while the accept loop catches up


class _HttpServer(ThreadedWSGIServer):
    request_queue_size = LISTEN_BACKLOG


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request; errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def make_http_server(host: str, port: int, app: Any) -> ThreadedWSGIServer:
    """A threaded WSGI server (a thread per connection) with a deep listen backlog."""
    return _HttpServer(host, port, app, handler=_QuietHandler)


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread of this process (tests, benchmarks); yields its URL."""
    httpd = make_http_server(host, port, app)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name="http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10.0)
