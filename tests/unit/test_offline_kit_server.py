"""The offline kit's server on the staging host (roles/offline_kit): its nginx configuration and unit, rendered by
Ansible, run by the real nginx on loopback over a staged kit's layout: the files and directory listings apt and
pip read, nothing else, read-only."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host_tools import require_tool
from tests.unit.role_render import render
from tests.unit.standin_http import free_port

SHA = "ab" * 32
KIT_ID = SHA[:16]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    nginx = require_tool("nginx")
    # nginx's workers run as nobody: the kits' directory is world-readable, as the role stages it (0755/0644).
    root = Path(tempfile.mkdtemp(prefix="enclave-kit-test-", dir="/tmp"))
    root.chmod(0o755)
    kit = root / "kits" / KIT_ID
    (kit / "wheels" / "hub-client").mkdir(parents=True)
    (kit / "KIT.json").write_text('{"format": 1}\n')
    (kit / "wheels" / "hub-client" / "huggingface_hub-2.4.0-py3-none-any.whl").write_bytes(b"wheel")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    rendered = render(tmp_path, roles=["offline_kit"], hosts="enclave_staging",
                      groups={"enclave_staging": {"stage": {"ansible_host": "127.0.0.1"}}, "enclave_gateway": {},
                              "enclave_nodes": {}},
                      templates={"conf": "offline_kit/kit-server.conf.j2",
                                 "unit": "offline_kit/enclave-kit-server.service.j2"},
                      extra={"enclave_private_network": "127.0.0.0/8", "offline_kit_sha256": SHA,
                             "offline_kit_port": port, "offline_kit_root": str(root / "kits"),
                             "offline_kit_server_pid": str(root / "nginx.pid"),
                             "offline_kit_server_logs": str(root)})["stage"]
    conf = root / "kit-server.conf"
    conf.write_text(rendered["conf"])
    checked = subprocess.run([nginx, "-t", "-q", "-c", str(conf)], capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stderr
    subprocess.run([nginx, "-c", str(conf)], check=True, capture_output=True, timeout=60)
    try:
        yield f"http://127.0.0.1:{port}", root, rendered
    finally:
        subprocess.run([nginx, "-c", str(conf), "-s", "quit"], capture_output=True, timeout=60, check=False)
        deadline = time.monotonic() + 10
        while (root / "nginx.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


def status(base: str, path: str, method: str = "GET") -> tuple[int, str]:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=b"x" if method == "POST" else None)
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        connection.close()


def test_the_kit_server_serves_the_staged_kits_read_only(served: tuple[str, Path, dict[str, str]]) -> None:
    base, root, _ = served
    assert status(base, f"/kit/{KIT_ID}/KIT.json") == (200, '{"format": 1}\n')
    # pip's --find-links reads the wheelhouse's directory listing
    code, listing = status(base, f"/kit/{KIT_ID}/wheels/hub-client/")
    assert code == 200 and 'href="huggingface_hub-2.4.0-py3-none-any.whl"' in listing
    assert status(base, f"/kit/{KIT_ID}/KIT.json", "POST")[0] == 403
    assert status(base, f"/kit/{KIT_ID}/missing")[0] == 404
    assert status(base, "/nginx.pid")[0] == 404  # only the kits' directory, nothing beside it
    assert status(base, "/kit/../nginx.pid")[0] in (400, 404)
    assert (root / "enclave-kit-server.access.log").stat().st_size > 0


def test_the_kit_server_unit_passes_systemd_analyze(served: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    require_tool("systemd-analyze")
    _, _, rendered = served
    unit = tmp_path / "enclave-kit-server.service"
    unit.write_text(rendered["unit"].replace("/usr/sbin/nginx", require_tool("nginx")))
    assert "ExecStart=" in rendered["unit"] and "-c /etc/enclave/kit-server.conf" in rendered["unit"]
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
