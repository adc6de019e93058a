"""Who may call SINCERE's servers, and over what: the API key and TLS, on both sides.

A server (the experiment server, the profiling app) takes its key from the ``API_KEY``
environment variable only: never a constant or a flag, so that it is on no command line and in
no file. With a key, every call but ``/health`` must carry ``Authorization: Bearer <key>``
(``KeyCheck``, compared in constant time). A server asked to listen beyond loopback without a
key refuses to start unless told that the open door is meant (``exposure_error``). With a
certificate and its private key it serves HTTPS (``server_tls``).

A client (the traffic generator, the runner, the profiling client) sends the key from
``API_KEY`` (``OPENAI_API_KEY`` where that is the one set, as for vLLM) and trusts the CA file it
is given (``client_verify``): for a self-signed certificate made inside the CVM, the certificate
itself. Nothing here writes or logs a key. The Flask side of the check is
``sincere.serving.guard``'s; serving over TLS, ``sincere.serving.http_server``'s.

    python -m sincere.access --hosts 10.0.0.5 gpu-vm     # a self-signed certificate in tls/
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sincere.cli import parse_constants

API_KEY_ENV = "API_KEY"  # the servers' key, and the one the clients send
OPENAI_KEY_ENV = "OPENAI_API_KEY"  # the clients' fallback (the key of an OpenAI-compatible server)
OPEN_PATHS = ("/health",)  # answered without the key: liveness probes, the runner's wait
KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))  # visible ASCII: header-safe
SHORT_KEY_CHARS = 16  # a key shorter than this is easy to guess: the server warns
MAKE_KEY = "API_KEY=$(openssl rand -hex 32)"


def check_key(key: str, source: str) -> str:
    """``key`` when it can travel in an Authorization header (visible ASCII, no spaces), else a
    ValueError naming ``source`` (never the key)."""
    if key and not set(key) <= KEY_CHARS:
        raise ValueError(f"{source} holds characters other than visible ASCII (spaces, "
                         f"newlines or accents): make one with {MAKE_KEY}")
    return key


def server_key(environ: Mapping[str, str] = os.environ) -> str:
    """A server's key: ``API_KEY`` from the environment ("" when unset)."""
    return check_key(environ.get(API_KEY_ENV, ""), API_KEY_ENV)


def client_key(environ: Mapping[str, str] = os.environ) -> str:
    """The key a client sends: ``API_KEY``, else ``OPENAI_API_KEY`` ("" when neither is set)."""
    name = API_KEY_ENV if environ.get(API_KEY_ENV) else OPENAI_KEY_ENV
    return check_key(environ.get(name, ""), name)


def bearer_headers(key: str) -> dict[str, str]:
    """The header that carries ``key`` (none without one)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _digest(text: str) -> bytes:
    # Both sides hashed first: compare_digest then sees equal lengths and leaks not even that.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class KeyCheck:
    """The key every call but ``OPEN_PATHS`` must carry; counts the calls refused for it."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("a KeyCheck needs a key")
        self._digest = _digest(check_key(key, "the key"))
        self._lock = threading.Lock()
        self._refused = 0
        self._seen_clients: set[str] = set()

    def __repr__(self) -> str:
        return "KeyCheck(<key not shown>)"

    @staticmethod
    def is_open(path: str) -> bool:
        return path in OPEN_PATHS

    def refusal(self, authorization: str | None) -> str | None:
        """Why a call with this Authorization header is refused, or None when it carries the
        key (compared in constant time)."""
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return ("this server needs an API key: send the header 'Authorization: Bearer "
                    f"<key>' with the key it was started with (its {API_KEY_ENV})")
        if not hmac.compare_digest(_digest(presented.strip()), self._digest):
            return "the API key is not this server's"
        return None

    def count_refusal(self, client: str) -> bool:
        """Count one refused call; True the first time this client is refused (to log it once)."""
        with self._lock:
            self._refused += 1
            first = client not in self._seen_clients
            if first and len(self._seen_clients) < 1000:
                self._seen_clients.add(client)
            return first

    @property
    def refused(self) -> int:
        return self._refused


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_error(host: str, key: str, allow_no_key: bool, script: str) -> str | None:
    """Why a server must not start: it would listen beyond loopback (``host``) with no key, and
    the open door was not chosen (``allow_no_key``); None when it may start."""
    if key or allow_no_key or is_loopback(host):
        return None
    return (f"HOST {host} serves other machines, and no {API_KEY_ENV} is set: anyone who "
            "reaches the port could send prompts, start or stop the run, and add or remove "
            f"models. Set a key in the environment ({MAKE_KEY} python {script} ...) and give "
            "the clients the same one, or serve without a key on purpose with "
            "--allow-no-key true")


def server_door(cfg: Any, script: str, say: Callable[[str], None] | None = None,
                environ: Mapping[str, str] = os.environ) -> tuple[str, ssl.SSLContext | None]:
    """A starting server's key (``API_KEY``) and TLS context (None: plain HTTP), from its
    constants ``HOST``, ``ALLOW_NO_KEY``, ``TLS_CERT`` and ``TLS_KEY``, once it is clear that it
    may start: ValueError saying why it may not (an open door not chosen, a key or certificate
    that cannot be used). ``say`` gets the door's notes (``access_notes``)."""
    key = server_key(environ)
    refusal = exposure_error(cfg.HOST, key, cfg.ALLOW_NO_KEY, script)
    if refusal:
        raise ValueError(refusal)
    tls = server_tls(cfg.TLS_CERT, cfg.TLS_KEY)
    for note in access_notes(cfg.HOST, key, tls is not None) if say else []:
        say(note)
    return key, tls


def access_notes(host: str, key: str, tls: bool) -> list[str]:
    """What a starting server says of its door (printed; no key in it): whether calls need the
    key, whether it speaks HTTPS, and a warning for each weak spot."""
    notes = [f"access: {'HTTPS' if tls else 'plain HTTP'} on {host}; "
             + (f"every call but {', '.join(OPEN_PATHS)} needs the API key ({API_KEY_ENV})"
                if key else "no API key")]
    if key and len(key) < SHORT_KEY_CHARS:
        notes.append(f"warning: the API key is shorter than {SHORT_KEY_CHARS} characters and "
                     f"easy to guess; make one with {MAKE_KEY}")
    if not tls and not is_loopback(host):
        notes.append("warning: plain HTTP beyond loopback: prompts, answers and the key cross "
                     "the network readable by anyone on the path; set TLS_CERT and TLS_KEY")
    return notes


def server_tls(cert_file: str | os.PathLike, key_file: str | os.PathLike
               ) -> ssl.SSLContext | None:
    """The TLS context of a server with this certificate (chain) and private key (PEM); None
    for plain HTTP (neither given). ValueError when only one is given or they cannot be read."""
    cert, key = str(cert_file or ""), str(key_file or "")
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError("HTTPS needs both TLS_CERT (the certificate) and TLS_KEY (its private "
                         "key); give both, or neither for plain HTTP")
    for name, path in (("TLS_CERT", cert), ("TLS_KEY", key)):
        if not Path(path).is_file():
            raise ValueError(f"{name} {path} is not a file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"TLS_CERT {cert} and TLS_KEY {key} cannot be used together "
                         f"({type(exc).__name__}: {getattr(exc, 'reason', None) or exc})"
                         ) from None
    return context


def client_verify(ca_file: str | os.PathLike) -> bool | str:
    """What a ``requests`` call verifies an HTTPS server against: the CA file given (for a
    self-signed certificate, the certificate itself), else the usual trusted CAs (True).
    ValueError when the file is not there."""
    if not ca_file:
        return True
    if not Path(ca_file).is_file():
        raise ValueError(f"CA_FILE {ca_file} is not a file (the certificate, or its CA's, to "
                         "trust)")
    return str(ca_file)


def local_host(listen_host: str) -> str:
    """Where a client on the same machine reaches a server listening on ``listen_host``: the
    loopback address for a wildcard (0.0.0.0, ::), which a certificate can name."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen_host.strip(),
                                                                      listen_host)


def url_scheme(tls: bool) -> str:
    return "https" if tls else "http"


def is_https(url: str) -> bool:
    """Whether calls to ``url`` go over TLS."""
    return url.strip().lower().startswith("https://")


def make_certificate(folder: Path, hosts: Sequence[str] = (), days: int = 30
                     ) -> tuple[Path, Path]:
    """A self-signed certificate (``cert.pem``) for ``hosts`` and 127.0.0.1 / localhost, and its
    private key (``key.pem``, readable by its owner only), made with openssl in ``folder``:
    made inside the CVM, its key never leaves it. RuntimeError when openssl is missing or
    fails."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make a certificate")
    names = list(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))
    alt = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in names)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", str(days), "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=sincere", "-addext", f"subjectAltName={alt}"],
        capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"openssl failed: {made.stderr.strip()[-300:]}")
    key.chmod(0o600)
    return cert, key


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m sincere.access --hosts ...``: make a self-signed certificate for a server."""
    cfg = parse_constants({"HOSTS": [], "OUT_DIR": "tls", "DAYS": 30}, argv, main.__doc__,
                          comments={"HOSTS": "the addresses and names clients use for the "
                                             "server (127.0.0.1 and localhost are added)",
                                    "OUT_DIR": "where cert.pem and key.pem go",
                                    "DAYS": "how long the certificate is valid"})
    try:
        cert, key = make_certificate(Path(cfg.OUT_DIR), cfg.HOSTS, cfg.DAYS)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {cert} (give it to the clients: CA_FILE) and {key} (keep it here)\n"
          f"serve with: {MAKE_KEY} python api_scheduler_experiments.py --host 0.0.0.0 "
          f"--tls-cert {cert} --tls-key {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
