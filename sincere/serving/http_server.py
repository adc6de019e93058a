"""The HTTP server both Flask apps are served by (the experiment server's and the profiling one).

werkzeug's threaded WSGI server (a thread per connection) with a deep listen backlog, so that a
burst of arrivals waits in the kernel rather than being refused, and without an access-log line
per request (thousands a run); errors are still logged. Imports werkzeug only, so that the
profiling app can use it without the experiment server.

With a TLS context (``sincere.access.server_tls``) it serves HTTPS. werkzeug would shake hands
inside its one accept loop, so that a client that connects and never speaks would hold every
other caller at the door; here the handshake happens in the connection's own thread, within
``HANDSHAKE_TIMEOUT_S``. werkzeug closes every connection after its answer, so each request
pays a full handshake: it is part of the client's latency (docs/server.md).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

LISTEN_BACKLOG = 4096  # connections the kernel holds while the accept loop catches up
HANDSHAKE_TIMEOUT_S = 10.0  # a TLS client that has not finished its handshake by then is dropped

log = logging.getLogger("sincere.serving")


class _HttpServer(ThreadedWSGIServer):
    request_queue_size = LISTEN_BACKLOG


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request; errors are still logged. Over TLS, the handshake is
    made here, in the connection's thread, before the request is read."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.settimeout(HANDSHAKE_TIMEOUT_S)
                self.connection.do_handshake()
                self.connection.settimeout(None)
            except (OSError, ValueError) as exc:  # ssl.SSLError and socket.timeout are OSErrors
                # A port scan, a plain-HTTP client, a client that does not trust the
                # certificate: no request came, nothing to record.
                log.debug("TLS handshake with %s failed: %s", self.client_address[0],
                          type(exc).__name__)
                self.close_connection = True
                return
        super().handle()


def make_http_server(host: str, port: int, app: Any,
                     tls: ssl.SSLContext | None = None) -> ThreadedWSGIServer:
    """A threaded WSGI server (a thread per connection) with a deep listen backlog; HTTPS with
    ``tls``."""
    httpd = _HttpServer(host, port, app, handler=_QuietHandler)
    if tls is not None:
        # Accepting does not shake hands (the connection's thread does, see _QuietHandler).
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True,
                                       do_handshake_on_connect=False)
        httpd.ssl_context = tls  # werkzeug: https in the request's environ, TLS errors quiet
    return httpd


def server_url(httpd: ThreadedWSGIServer, host: str | None = None) -> str:
    """The URL a client on this machine reaches ``httpd`` at (https when it serves TLS)."""
    scheme = "https" if httpd.ssl_context is not None else "http"
    return f"{scheme}://{host or httpd.host}:{httpd.server_port}"


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0,
            tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``app`` from a thread of this process (tests, benchmarks); yields its URL."""
    httpd = make_http_server(host, port, app, tls)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name="http", daemon=True)
    thread.start()
    try:
        yield server_url(httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10.0)
