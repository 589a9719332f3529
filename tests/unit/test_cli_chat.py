"""`enclave chat` against a real TLS server standing in for the gateway (a CA and a certificate made here with
openssl, as the gateway role makes them): the CA is verified, the key travels as a bearer token, errors name
the cause."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from typer.testing import CliRunner

from enclave import paths
from enclave.cli import app
from enclave.cli import chat as chat_cli
from enclave.gateway.client import answer_text, chat_body
from enclave.plan import planfile
from enclave.runner.inventory import validate

runner = CliRunner()
KEY = "enc-" + "k" * 40


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> None:
    directory.mkdir(parents=True)
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test CA", "-addext",
            "basicConstraints=critical,CA:TRUE", cwd=directory)
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "gw.key",
            "-out", "gw.csr", "-subj", "/CN=gw01", cwd=directory)
    openssl("x509", "-req", "-in", "gw.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.cnf", "-out", "gw.crt", cwd=directory)


class Gateway(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Gateway.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "invalid API key"}')
            return
        answer = {"choices": [{"message": {"role": "assistant", "content": "Hello from the enclave"}}],
                  "usage": {"completion_tokens": 5}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def inventory(tmp_path: Path, isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    copy = tmp_path / "inv"
    shutil.copytree(paths.share_dir() / "inventory" / "h200-cluster", copy)
    make_pki(copy / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(copy / "pki" / "gw.crt", copy / "pki" / "gw.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (copy / "host_vars").mkdir()
    (copy / "host_vars" / "gw01.yml").write_text(yaml.safe_dump({
        "ansible_host": "127.0.0.1", "gateway_https_port": server.server_address[1],
        "gateway_api_keys": {"sandbox-demo": KEY, "other": "enc-" + "o" * 40}}))
    planfile.write(copy, {"served_model_name": "tiny-chat", "revision": "r", "replicas": []})
    monkeypatch.setattr(chat_cli, "validate", lambda path, reachable=False: validate(path, reachable=False))
    Gateway.seen = []
    # the hosts file, not the directory: Ansible would read pki/ as inventory sources too
    yield copy / "hosts.yml"
    server.shutdown()
    server.server_close()


def test_chat_through_tls_with_a_named_client(inventory: Path) -> None:
    result = runner.invoke(app, ["chat", "-i", str(inventory), "--client", "sandbox-demo", "Say hello"])
    assert result.exit_code == 0, result.output
    assert "Hello from the enclave" in result.output
    assert KEY not in result.output  # the key is sent, never shown
    [request] = Gateway.seen
    assert request["path"] == "/v1/chat/completions" and request["auth"] == f"Bearer {KEY}"
    assert request["body"] == chat_body("tiny-chat", "Say hello", 64)


def test_key_from_the_environment_and_a_refusal_names_the_status(inventory: Path) -> None:
    result = runner.invoke(app, ["chat", "-i", str(inventory), "hi"], env={"ENCLAVE_API_KEY": "enc-" + "x" * 40})
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "invalid API key" in result.output


def test_a_certificate_from_another_ca_is_refused(inventory: Path, tmp_path: Path) -> None:
    make_pki(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "ca.crt", inventory.parent / "pki" / "ca.crt")
    result = runner.invoke(app, ["chat", "-i", str(inventory), "--client", "sandbox-demo", "hi"])
    assert result.exit_code == 1 and "TLS with 127.0.0.1" in result.output
    assert Gateway.seen == []


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--client", "nobody"], {}, "--client nobody: no readable key of that name in gateway_api_keys"),
    ([], {"ENCLAVE_API_KEY": ""}, "no API key: set ENCLAVE_API_KEY"),
])
def test_no_key_is_a_usage_error(inventory: Path, args: list[str], env: dict[str, str], message: str) -> None:
    result = runner.invoke(app, ["chat", "-i", str(inventory), *args, "hi"], env={"COLUMNS": "300", **env})
    assert result.exit_code == 2 and message in result.output


def test_answer_without_content_is_an_error() -> None:
    with pytest.raises(Exception, match="no choices"):
        answer_text({"choices": []})
