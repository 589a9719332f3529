"""The gateway role's nginx configuration, rendered by Ansible and served by a real nginx on this machine in
front of two stand-in engines (plain HTTP servers on loopback addresses): keys, allow-list, TLS from the role's
own internal-CA tasks, streaming, failover and drain, idle engine connections closed before the engine closes them,
and a log that never holds a key."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.host_tools import require_tool
from tests.unit.role_render import render
from tests.unit.standin_http import KeepAliveHandler, free_port, serve

# The longest key the role accepts (200 characters) must fit nginx's map hash too.
CLIENT_KEYS = {"team-a": "ta-" + "A" * 197, "batch": "bt-" + "b" * 40,
               # Regex metacharacters the key alphabet allows: they must match only themselves.
               "dotted": "d.t+" + "q" * 30}
ENGINE_KEY = "engine-" + "e" * 30
NODES = {"node1": "127.0.0.11", "node2": "127.0.0.12"}


@dataclass
class Engine:
    """A stand-in engine: records what the gateway sent; streams until told to finish."""

    name: str
    address: str
    port: int
    seen: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    connections: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        engine = self

        class Handler(KeepAliveHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def setup(self) -> None:
                super().setup()
                engine.connections.append(self.connection)

            def do_GET(self) -> None:
                engine.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                self._json(200, {"served_by": engine.name})

            def do_HEAD(self) -> None:
                engine.seen.append({"path": self.path, "method": "HEAD"})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                engine.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                if not body.get("stream"):
                    self._json(200, {"served_by": engine.name})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in ("first", "WAIT", "last", "[DONE]"):
                    if part == "WAIT":
                        engine.release.wait(30)
                        continue
                    data = f"data: {json.dumps({'served_by': engine.name, 'part': part})}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.server = serve(self.address, self.port, Handler)

    def stop(self) -> None:
        """Like a dead process: the listener and every open connection (the gateway's kept-alive ones) close."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.connections.clear()


@dataclass
class Gateway:
    prefix: Path
    port: int
    ca: Path
    engines: dict[str, Engine]
    files: dict[str, str]

    def connection(self, *, verify: bool = True) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.ca)) if verify else ssl._create_unverified_context()  # noqa: S323
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=30)
        conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=30),
                                        server_hostname="gw")
        return conn

    def request(self, method: str, path: str, key: str | None = None, body: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        sent = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload

    def nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nginx", "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), *args],
                              capture_output=True, text=True, timeout=60, check=False)

    def write_upstream(self, text: str) -> None:
        (self.prefix / "enclave" / "upstream.conf").write_text(text)

    def access_log(self) -> str:
        """The complete records so far: a read may meet a record nginx is still writing (a loaded machine did), so
        a last line without its newline is left for the next read."""
        path = self.prefix / "logs" / "enclave-access.log"
        text = path.read_text() if path.exists() else ""
        return text[:text.rfind("\n") + 1]


def rendered(tmp: Path, *, engine_port: int, https_port: int, drained: list[str],
             make_ca: bool = False, keys: dict[str, str] | None = None,
             settings: dict[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """The role's gateway files for host "gw" laid out under tmp/nginx, with `keys` (CLIENT_KEYS) and any other
    role `settings` (extra vars, e.g. per-client limits)."""
    prefix = tmp / "nginx"
    groups = {"enclave_nodes": {n: {"ansible_host": a} for n, a in NODES.items()},
              "enclave_gateway": {"gw": {"ansible_host": "127.0.0.10"}}}
    extra = {
        "enclave_private_network": "127.0.0.0/8", "gateway_api_keys": CLIENT_KEYS if keys is None else keys,
        "gateway_engine_api_key": ENGINE_KEY, "gateway_engine_port": engine_port,
        "gateway_https_port": https_port, "gateway_drained_hosts": drained, "gateway_ca_dir": str(tmp / "pki"),
        "gateway_nginx_dir": str(prefix), "gateway_conf_dir": str(prefix / "enclave"),
        "gateway_log_dir": str(prefix / "logs"), "gateway_pid_file": str(prefix / "nginx.pid"),
        "gateway_shutdown_timeout": "60s", "gateway_nginx_conf_command": True,  # this machine's nginx is >= 1.19.4
        **(settings or {}),
    }
    return render(tmp / "render", roles=["gateway"], groups=groups, hosts="enclave_gateway",
                  task_files=("gateway/tasks/internal_ca.yml",) if make_ca else (), extra=extra, templates={
                      "nginx.conf": "gateway/nginx.conf.j2", "api-keys.map": "gateway/api-keys.map.j2",
                      "engine-auth.conf": "gateway/engine-auth.conf.j2", "upstream.conf": "gateway/upstream.conf.j2",
                      "drained": "gateway/drained.j2", "usage.js": "gateway/usage.js.j2"})


def lay_out_prefix(tmp: Path, files: dict[str, str]) -> Path:
    """An nginx prefix under `tmp` holding the rendered gateway files and the certificate the kit's CA issued
    (`rendered(..., make_ca=True)`), where the role puts them below /etc/nginx."""
    prefix = tmp / "nginx"
    (prefix / "enclave" / "tls").mkdir(parents=True)
    (prefix / "logs").mkdir()
    (prefix / "nginx.conf").write_text(files["nginx.conf"])
    for name in ("api-keys.map", "engine-auth.conf", "upstream.conf", "usage.js"):
        (prefix / "enclave" / name).write_text(files[name])
    shutil.copy(tmp / "pki" / "gw.crt", prefix / "enclave" / "tls" / "server.crt")
    shutil.copy(tmp / "pki" / "gw.key", prefix / "enclave" / "tls" / "server.key")
    return prefix


@contextmanager
def serving(tmp: Path, files: dict[str, str], engine_port: int, https_port: int) -> Iterator[Gateway]:
    """A real nginx with the rendered files (after `nginx -t`) in front of one stand-in engine per node; both
    stopped afterwards (nginx by its own pid, gracefully)."""
    prefix = lay_out_prefix(tmp, files)
    engines = {name: Engine(name, address, engine_port) for name, address in NODES.items()}
    for engine in engines.values():
        engine.start()
    gw = Gateway(prefix, https_port, tmp / "pki" / "ca.crt", engines, files)
    try:
        with running(gw):
            yield gw
    finally:
        for engine in engines.values():
            engine.release.set()
            engine.stop()


@contextmanager
def running(gw: Gateway) -> Iterator[None]:
    """The gateway's nginx started (after `nginx -t`), and stopped afterwards by its own pid, gracefully."""
    checked = gw.nginx("-t")
    assert checked.returncode == 0, checked.stderr
    started = gw.nginx()
    assert started.returncode == 0, started.stderr
    pid = int((gw.prefix / "nginx.pid").read_text())
    try:
        yield
    finally:
        os.kill(pid, signal.SIGQUIT)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    require_tool("nginx")
    tmp = tmp_path_factory.mktemp("gateway")
    engine_port, https_port = free_port(), free_port()
    files = rendered(tmp, engine_port=engine_port, https_port=https_port, drained=[], make_ca=True)["gw"]
    with serving(tmp, files, engine_port, https_port) as gw:
        yield gw


def test_kit_ca_files_are_private_and_verify(gateway: Gateway) -> None:
    pki = gateway.ca.parent
    assert (pki / "ca.key").stat().st_mode & 0o077 == 0, "the CA key is readable by others"
    assert (pki / "gw.key").stat().st_mode & 0o077 == 0, "the server key is readable by others"
    text = subprocess.run(["openssl", "x509", "-in", str(pki / "gw.crt"), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:gw" in text and "IP Address:127.0.0.10" in text


def test_tls_is_verified_with_the_kits_ca(gateway: Gateway) -> None:
    conn = gateway.connection()
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        context = ssl.create_default_context()  # the system's CAs do not know the kit's
        context.wrap_socket(socket.create_connection(("127.0.0.1", gateway.port), timeout=10), server_hostname="gw")


@pytest.mark.parametrize("key", [None, "wrong-" + "x" * 30, ENGINE_KEY])
def test_missing_wrong_or_engine_key_is_401(gateway: Gateway, key: str | None) -> None:
    status, headers, body = gateway.request("POST", "/v1/completions", key, {"prompt": "hi"})
    assert status == 401
    assert headers.get("www-authenticate", "").startswith("Bearer")
    assert json.loads(body)["error"]["code"] == 401


def test_valid_key_reaches_an_engine_with_the_engines_key(gateway: Gateway) -> None:
    for engine in gateway.engines.values():
        engine.seen.clear()
    status, headers, body = gateway.request("POST", "/v1/chat/completions", CLIENT_KEYS["team-a"],
                                            {"messages": []}, headers={"X-Request-Id": "trace-123"})
    assert status == 200, body
    assert headers["x-request-id"] == "trace-123"
    seen = [s for e in gateway.engines.values() for s in e.seen]
    assert len(seen) == 1
    assert seen[0]["authorization"] == f"Bearer {ENGINE_KEY}", "the engine must get its own key, not the client's"
    assert seen[0]["x-request-id"] == "trace-123"
    status, headers, _ = gateway.request("GET", "/v1/models", CLIENT_KEYS["batch"])
    assert status == 200 and len(headers["x-request-id"]) >= 16, "the gateway makes a request id when none is sent"


def test_keys_match_exactly(gateway: Gateway) -> None:
    for engine in gateway.engines.values():
        engine.seen.clear()
    near = [CLIENT_KEYS["batch"].upper(), CLIENT_KEYS["team-a"].lower(), CLIENT_KEYS["batch"].capitalize(),
            "dXt+" + "q" * 30, "d.tt+" + "q" * 30, CLIENT_KEYS["batch"] + "x", CLIENT_KEYS["batch"][:-1]]
    for key in near:
        status, _, body = gateway.request("POST", "/v1/completions", key, {"prompt": "hi"})
        assert status == 401, f"a key near a real one ({key[:6]}...) got {status}"
        assert json.loads(body)["error"]["code"] == 401
    assert not any(e.seen for e in gateway.engines.values()), "a near key reached an engine"
    for key in CLIENT_KEYS.values():
        assert gateway.request("POST", "/v1/completions", key, {"prompt": "hi"})[0] == 200
    # The scheme, unlike the key, is case-insensitive (RFC 9110): clients sending "bearer" keep working.
    status, _, _ = gateway.request("POST", "/v1/completions", body={"prompt": "hi"},
                                   headers={"Authorization": f"bearer {CLIENT_KEYS['batch']}"})
    assert status == 200


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/v1/completions", "POST"), ("GET", "/v1/chat/completions", "POST"), ("PUT", "/v1/embeddings", "POST"),
    ("DELETE", "/v1/completions", "POST"), ("POST", "/v1/models", "GET, HEAD"), ("PATCH", "/v1/models", "GET, HEAD"),
    ("POST", "/health", "GET, HEAD"), ("OPTIONS", "/health", "GET, HEAD")])
def test_wrong_method_is_405(gateway: Gateway, method: str, path: str, allowed: str) -> None:
    before = sum(len(e.seen) for e in gateway.engines.values())
    status, headers, body = gateway.request(method, path, CLIENT_KEYS["batch"], {} if method != "GET" else None)
    assert status == 405, body
    assert headers.get("allow") == allowed and headers.get("x-request-id")
    error = json.loads(body)["error"]
    assert error["code"] == 405 and error["type"] == "invalid_request_error"
    assert sum(len(e.seen) for e in gateway.engines.values()) == before, f"{method} {path} reached an engine"


def test_key_is_checked_before_the_method(gateway: Gateway) -> None:
    assert gateway.request("POST", "/v1/models", None, {})[0] == 401
    assert gateway.request("GET", "/v1/completions", "wrong-" + "x" * 30)[0] == 401


def test_head_reaches_the_engines_for_models_and_health(gateway: Gateway) -> None:
    for engine in gateway.engines.values():
        engine.seen.clear()
    assert gateway.request("HEAD", "/v1/models", CLIENT_KEYS["batch"])[0] == 200
    assert gateway.request("HEAD", "/health")[0] == 200
    seen = sorted(s["path"] for e in gateway.engines.values() for s in e.seen if s.get("method") == "HEAD")
    assert seen == ["/health", "/v1/models"]


def _handshake(port: int, ca: Path, *, ciphers: str | None = None,
               version: ssl.TLSVersion | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="gw")


# TLS 1.2 suites an old client could offer: forward-secret but CBC, and (with an RSA key) no forward secrecy at all.
WEAK_FOR_ECDSA = ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA"]
WEAK_FOR_RSA = ["AES128-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "ECDHE-RSA-AES128-SHA256"]


@pytest.mark.parametrize("cipher", WEAK_FOR_ECDSA)
def test_tls12_without_forward_secret_aead_fails(gateway: Gateway, cipher: str) -> None:
    with pytest.raises(ssl.SSLError):
        _handshake(gateway.port, gateway.ca, ciphers=cipher, version=ssl.TLSVersion.TLSv1_2).close()


def test_tls_suites_offered(gateway: Gateway) -> None:
    for version, cipher in [(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256"),
                            (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305"),
                            (ssl.TLSVersion.TLSv1_3, None)]:
        with _handshake(gateway.port, gateway.ca, ciphers=cipher, version=version) as sock:
            name, protocol, _ = sock.cipher()
            assert protocol == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
            assert "GCM" in name or "CHACHA20" in name, name


def test_no_session_tickets(gateway: Gateway) -> None:
    # TLS 1.2, where a ticket comes in the handshake itself. (TLS 1.3 sends a NewSessionTicket message for any
    # resumption, but with tickets off nginx fills it with a session-cache id, not a sealed session.)
    with _handshake(gateway.port, gateway.ca, version=ssl.TLSVersion.TLSv1_2) as sock:
        assert sock.session is not None
        assert not sock.session.has_ticket, "the gateway issued a TLS session ticket"


@pytest.fixture(scope="module")
def rsa_gateway(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The same configuration with an RSA certificate (an operator's may be one), where static-RSA key exchange
    (no forward secrecy) is possible unless the cipher list forbids it. (port, the certificate as CA)"""
    prefix = tmp_path_factory.mktemp("rsa") / "nginx"
    shutil.copytree(gateway.prefix, prefix, ignore=shutil.ignore_patterns("*.pid", "*.log", "*_temp"))
    port = free_port()
    conf = gateway.files["nginx.conf"].replace(str(gateway.prefix), str(prefix))
    conf = conf.replace(f"listen {gateway.port} ssl", f"listen {port} ssl")
    conf = conf.replace("shared:enclave_tls:", "shared:enclave_tls_rsa:")
    (prefix / "nginx.conf").write_text(conf)
    tls = prefix / "enclave" / "tls"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=gw",
                    "-addext", "subjectAltName=DNS:gw", "-keyout", str(tls / "server.key"),
                    "-out", str(tls / "server.crt")], check=True, capture_output=True, timeout=60)
    started = subprocess.run(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True,
                             text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    yield port, tls / "server.crt"
    os.kill(int((prefix / "nginx.pid").read_text()), signal.SIGQUIT)


@pytest.mark.parametrize("cipher", WEAK_FOR_RSA)
def test_tls12_without_forward_secret_aead_fails_with_an_rsa_key(rsa_gateway: tuple[int, Path], cipher: str) -> None:
    port, cert = rsa_gateway
    with pytest.raises(ssl.SSLError):
        _handshake(port, cert, ciphers=cipher, version=ssl.TLSVersion.TLSv1_2).close()
    with _handshake(port, cert, ciphers="ECDHE-RSA-AES128-GCM-SHA256", version=ssl.TLSVersion.TLSv1_2) as sock:
        assert sock.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"


@pytest.mark.parametrize("path", ["/", "/metrics", "/invocations", "/pooling", "/v1/score", "/v1/rerank", "/pause",
                                  "/v1/completions/extra", "/version", "/load"])
def test_paths_off_the_allow_list_are_404_even_with_a_key(gateway: Gateway, path: str) -> None:
    before = sum(len(e.seen) for e in gateway.engines.values())
    status, _, _ = gateway.request("POST", path, CLIENT_KEYS["team-a"], {})
    assert status == 404
    assert sum(len(e.seen) for e in gateway.engines.values()) == before, f"{path} reached an engine"


def test_health_needs_no_key(gateway: Gateway) -> None:
    status, _, body = gateway.request("GET", "/health")
    assert status == 200 and "served_by" in json.loads(body)


def test_body_size_limit(gateway: Gateway) -> None:
    status, _, _ = gateway.request("POST", "/v1/completions", CLIENT_KEYS["team-a"], {"prompt": "x" * (17 << 20)})
    assert status == 413


def test_the_log_names_clients_and_never_holds_a_key(gateway: Gateway) -> None:
    gateway.request("POST", "/v1/completions?api_key=query-secret", CLIENT_KEYS["team-a"], {"prompt": "body-secret"})
    deadline = time.monotonic() + 5
    while "team-a" not in gateway.access_log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = gateway.access_log()
    lines = [json.loads(line) for line in log.splitlines()]
    assert any(line["client"] == "team-a" and line["path"] == "/v1/completions" for line in lines)
    for secret in [*CLIENT_KEYS.values(), ENGINE_KEY, "wrong-", "Bearer", "query-secret", "body-secret"]:
        assert secret not in log, f"{secret[:8]}... reached the access log"


def stream(gateway: Gateway, key: str) -> tuple[http.client.HTTPResponse, http.client.HTTPSConnection]:
    conn = gateway.connection()
    conn.request("POST", "/v1/chat/completions", body=json.dumps({"stream": True}).encode(),
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return conn.getresponse(), conn


def events(response: http.client.HTTPResponse, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        line = response.fp.readline()
        assert line, "the stream ended early"
        if line.startswith(b"data: ") and b"[DONE]" not in line:
            got.append(json.loads(line[6:]))
    return got


def test_streams_arrive_unbuffered(gateway: Gateway) -> None:
    for engine in gateway.engines.values():
        engine.release.clear()
    response, conn = stream(gateway, CLIENT_KEYS["team-a"])
    assert response.status == 200
    # The engine holds the rest of the stream: the first event can only arrive if nginx does not buffer.
    [first] = events(response, 1)
    assert first["part"] == "first"
    for engine in gateway.engines.values():
        engine.release.set()
    assert events(response, 1)[0]["part"] == "last"
    conn.close()


def test_drain_keeps_the_stream_in_flight_and_moves_new_requests(gateway: Gateway, tmp_path: Path) -> None:
    for engine in gateway.engines.values():
        engine.release.clear()
    response, conn = stream(gateway, CLIENT_KEYS["team-a"])
    [first] = events(response, 1)
    busy = first["served_by"]
    other = next(n for n in NODES if n != busy)
    drained = rendered(tmp_path, engine_port=gateway.engines[busy].port, https_port=gateway.port, drained=[busy])
    gateway.write_upstream(drained["gw"]["upstream.conf"])
    assert f"# {busy} (drained)" in drained["gw"]["upstream.conf"] and busy in drained["gw"]["drained"]
    reloaded = gateway.nginx("-s", "reload")
    assert reloaded.returncode == 0, reloaded.stderr
    time.sleep(1)  # the new workers take over
    served = {json.loads(gateway.request("POST", "/v1/completions", CLIENT_KEYS["batch"], {})[2])["served_by"]
              for _ in range(6)}
    assert served == {other}, f"new requests went to {served} while {busy} was drained"
    gateway.engines[busy].release.set()
    assert events(response, 1)[0] == {"served_by": busy, "part": "last"}, "the stream in flight was cut"
    conn.close()
    gateway.write_upstream(rendered(tmp_path / "undrain", engine_port=gateway.engines[busy].port,
                                    https_port=gateway.port, drained=[])["gw"]["upstream.conf"])
    assert gateway.nginx("-s", "reload").returncode == 0
    time.sleep(1)
    served = {json.loads(gateway.request("POST", "/v1/completions", CLIENT_KEYS["batch"], {})[2])["served_by"]
              for _ in range(8)}
    assert served == set(NODES), f"after undrain only {served} served"


def test_a_stopped_engine_is_skipped(gateway: Gateway) -> None:
    gateway.engines["node1"].stop()
    try:
        statuses = [gateway.request("POST", "/v1/completions", CLIENT_KEYS["team-a"], {}) for _ in range(8)]
        assert [s for s, _, _ in statuses] == [200] * 8
        assert {json.loads(b)["served_by"] for _, _, b in statuses} == {"node2"}
    finally:
        gateway.engines["node1"].start()


# vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE default, which the engine role keeps: uvicorn closes a connection idle this long.
ENGINE_IDLE_CLOSE_S = 5.0


def idle_watch(address: str) -> tuple[int, queue.Queue[tuple[str, float]]]:
    """An engine stand-in for one kept-alive connection: answers one request, then waits as uvicorn does for the
    next one; reports who closed the idle connection first ("gateway", or "engine" at ENGINE_IDLE_CLOSE_S) and when."""
    listener = socket.create_server((address, 0))
    port = int(listener.getsockname()[1])
    result: queue.Queue[tuple[str, float]] = queue.Queue()

    def watch() -> None:
        with listener:
            listener.settimeout(30)
            conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    result.put(("gateway before the request", 0.0))
                    return
                request += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            answered = time.monotonic()
            readable, _, _ = select.select([conn], [], [], ENGINE_IDLE_CLOSE_S)
            idle = time.monotonic() - answered
            if not readable:
                result.put(("engine", idle))
            else:
                result.put(("gateway" if conn.recv(1) == b"" else "another request", idle))

    threading.Thread(target=watch, daemon=True).start()
    return port, result


def test_the_gateway_lets_go_of_an_idle_engine_connection_before_the_engine_does(gateway: Gateway) -> None:
    # Otherwise a request can go down a connection the engine is closing: with the other replica drained there is
    # none to retry on, and the client gets a 502 (test_update saw one while node1 stayed out after a failed update).
    port, result = idle_watch("127.0.0.13")
    gateway.write_upstream(f"server 127.0.0.13:{port} max_fails=2 fail_timeout=10s;\n")
    try:
        assert gateway.nginx("-s", "reload").returncode == 0
        time.sleep(1)  # the new workers take over
        status, _, _ = gateway.request("GET", "/health")
        assert status == 200
        closer, idle = result.get(timeout=ENGINE_IDLE_CLOSE_S + 10)
        assert closer == "gateway", f"the {closer} closed the idle connection after {idle:.1f} s"
    finally:
        gateway.write_upstream(gateway.files["upstream.conf"])
        assert gateway.nginx("-s", "reload").returncode == 0
        time.sleep(1)
