"""The plumbing of the HTTP stand-ins unit tests run on loopback (engines behind the test gateways, /metrics
servers): a free port, a quiet handler base, a server on a daemon thread."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, so connections stay open as nginx keeps them to an upstream; nothing logged into the test's output."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


def serve(address: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server for `handler` on address:port (0: any free port), answering on a daemon thread until shut down."""
    server = ThreadingHTTPServer((address, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
