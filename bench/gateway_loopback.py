"""The gateway as its role renders it, served by this machine's nginx on loopback addresses in front of stand-in
engines that answer after a fixed service time: `bench/gateway.py --loopback` measures the gateway's own cost
(TLS, key check, proxy hop) without a sandbox. Nothing leaves 127.0.0.0/8.

The stand-ins take the place of an engine's compute, so the ratio says how much the gateway adds to an engine
answering in that time; the real engines (the sandbox mode) answer in hundreds of milliseconds on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/gateway.py`: the checkout's tests/ is not on the path
    sys.path.insert(0, str(REPO))

# The unit tests' rendering of the gateway role (and their loopback addresses and keys): one definition.
from tests.unit.test_gateway_nginx import (  # noqa: E402
    CLIENT_KEYS,
    ENGINE_KEY,
    NODES,
    free_port,
    lay_out_prefix,
    rendered,
)

GATEWAY_ADDRESS = "127.0.0.10"  # in the kit CA's server certificate for host "gw" (rendered() sets it)
MODEL = "loopback-stand-in"


def _stand_in(address: str, port: int, seconds: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server
        # Headers and body go out in two writes: with Nagle on, the body waits for the peer's delayed ACK (40 ms
        # on Linux) whenever nginx is the peer. uvicorn, vLLM's server, sets TCP_NODELAY too.
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(seconds)
            data = json.dumps({"choices": [{"text": " stand-in"}], "model": MODEL}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _nginx(prefix: Path, *args: str) -> None:
    proc = subprocess.run(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), *args],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"nginx {' '.join(args) or 'start'} failed: {proc.stderr.strip()[-1000:]}")


@contextmanager
def loopback_gateway(engine_ms: float) -> Iterator[dict[str, Any]]:
    """Yield the client's config (ca, model, paths) for a gateway and two stand-in engines on loopback."""
    if shutil.which("nginx") is None or os.geteuid() != 0:
        raise SystemExit("--loopback needs root and nginx on this machine (Debian package nginx)")
    tmp = Path(tempfile.mkdtemp(prefix="enclave-bench-gateway-"))
    engines: list[ThreadingHTTPServer] = []
    pid = None
    try:
        engine_port, https_port = free_port(), free_port()
        # The bench client's limits stay in the path (limit_req and limit_conn run on every request) but far above
        # what the bench sends, so every request is measured, none refused.
        unlimited = {"rate": "999999r/s", "burst": 100000, "concurrent": 60000}
        files = rendered(tmp, engine_port=engine_port, https_port=https_port, drained=[], make_ca=True,
                         settings={"gateway_client_limits": {next(iter(CLIENT_KEYS)): unlimited}})["gw"]
        prefix = lay_out_prefix(tmp, files)
        engines = [_stand_in(address, engine_port, engine_ms / 1000) for address in NODES.values()]
        _nginx(prefix, "-t", "-q")
        _nginx(prefix)
        pid = int((prefix / "nginx.pid").read_text())
        yield {
            "ca": (tmp / "pki" / "ca.crt").read_text(), "model": MODEL,
            "paths": {
                "gateway": {"key": next(iter(CLIENT_KEYS.values())),
                            "targets": [{"host": GATEWAY_ADDRESS, "port": https_port, "tls": True}]},
                "direct": {"key": ENGINE_KEY,
                           "targets": [{"host": a, "port": engine_port, "tls": False} for a in NODES.values()]},
            },
        }
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)
        for server in engines:
            server.shutdown()
            server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
