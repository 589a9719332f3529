"""The gateway certificate's lifetime (enclave.gateway.cert): read in a real verified TLS handshake on loopback
from certificates openssl makes here, judged against the one margin setting, and `enclave cert renew`'s run."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from enclave.cli import app
from enclave.cli.cert import renew_request, settled
from enclave.cli.status import summary_lines
from enclave.gateway import cert
from enclave.gateway.client import GatewayTarget
from enclave.status.cluster import cluster_status

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a 5-day server certificate for 127.0.0.1, as the gateway role makes them (EC P-256)."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "30", "-subj", "/O=enclave/CN=test CA",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign")
    (d / "server.cnf").write_text("basicConstraints = critical, CA:FALSE\nextendedKeyUsage = serverAuth\n"
                                  "subjectAltName = IP:127.0.0.1\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            d / "server.key", "-out", d / "server.csr", "-subj", "/O=enclave/CN=gateway")
    openssl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key", "-set_serial",
            "0x5eed", "-days", "5", "-extfile", d / "server.cnf", "-out", d / "server.crt")
    return d


@pytest.fixture
def tls_server(pki: Path) -> Iterator[int]:
    """A TLS listener on loopback serving the 5-day certificate; handshakes only (no HTTP needed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def test_served_reads_the_certificate_in_a_verified_handshake(pki: Path, tls_server: int) -> None:
    served = cert.served(GatewayTarget("127.0.0.1", tls_server, pki / "ca.crt"))
    assert served.serial == "5EED"
    assert "commonName=gateway" in served.subject
    left = cert.days_left(served, datetime.now(UTC))
    assert 4.9 < left <= 5, left


def test_a_certificate_that_does_not_verify_or_no_listener_is_a_cert_error(pki: Path, tls_server: int,
                                                                           tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            other / "ca.key", "-out", other / "ca.crt", "-days", "1", "-subj", "/CN=someone else")
    with pytest.raises(cert.CertError, match="does not verify"):
        cert.served(GatewayTarget("127.0.0.1", tls_server, other / "ca.crt"))
    with socket.socket() as closed:  # a port nothing listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        with pytest.raises(cert.CertError, match="no TLS handshake"):
            cert.served(GatewayTarget("127.0.0.1", closed.getsockname()[1], pki / "ca.crt"), timeout=2)
    with pytest.raises(cert.CertError, match="no CA certificate at"):
        cert.served(GatewayTarget("127.0.0.1", tls_server, tmp_path / "missing.crt"))


def served_at(days: float) -> cert.ServedCert:
    return cert.ServedCert(NOW + timedelta(days=days), "01", "CN=gateway")


@pytest.mark.parametrize(("days", "expected"), [
    (397, None),
    (21.5, None),
    (20.9, "expires within 21 days (valid until 2026-12-25 09:36 UTC (20 days))"),
    (-3, "expired 2026-12-01 12:00 UTC (3 days ago)"),
    (0.85, "(valid until 2026-12-05 08:24 UTC (20 hours))"),
    (-0.5, "expired 2026-12-04 00:00 UTC (12 hours ago)"),
    (1 / 24 + 1e-6, "(1 hour)"),
])
def test_problem_names_the_margin_and_the_date(days: float, expected: str | None) -> None:
    found = cert.problem(served_at(days), NOW, 21)
    if expected is None:
        assert found is None
    else:
        assert found is not None and expected in found and "enclave cert renew" in found


def test_from_peer_reads_what_ssl_gives() -> None:
    peer = {"notAfter": "Jan  5 12:00:00 2027 GMT", "serialNumber": "0A", "subject": ((("commonName", "gw"),),)}
    served = cert.from_peer(peer)
    assert served.not_after == datetime(2027, 1, 5, 12, 0, tzinfo=UTC)
    assert (served.serial, served.subject) == ("0A", "commonName=gw")
    with pytest.raises(cert.CertError, match="notAfter"):
        cert.from_peer({"serialNumber": "0A"})


def test_one_margin_setting_for_verify_status_and_the_alert() -> None:
    defaults = yaml.safe_load((REPO / "playbooks/roles/enclave/defaults/main.yml").read_text())
    assert cert.warn_days() == defaults[cert.WARN_DAYS_VAR] == 21
    assert cert.warn_days({cert.WARN_DAYS_VAR: "30"}) == 30
    monitoring = yaml.safe_load((REPO / "playbooks/roles/monitoring/defaults/main.yml").read_text())
    assert monitoring["monitoring_alert_cert_days"] == "{{ " + cert.WARN_DAYS_VAR + " }}"


def test_renew_runs_the_tls_entry_point_with_renew_forced(tmp_path: Path) -> None:
    request = renew_request(tmp_path / "hosts.yml")
    assert request.playbook == "cert-renew.yml"
    assert dict(request.extra_vars) == {"gateway_cert_renew": True}
    play = yaml.safe_load((REPO / "playbooks" / request.playbook).read_text())[0]
    assert play["hosts"] == "enclave_gateway"
    assert play["tasks"][0]["ansible.builtin.include_role"] == {"name": "gateway", "tasks_from": "tls"}
    issue = next(t for t in yaml.safe_load((REPO / "playbooks/roles/gateway/tasks/internal_ca.yml").read_text())
                 if t["name"] == "Issue the gateway's certificate on the controller")
    assert "gateway_cert_renew | bool" in issue["when"]


def test_renew_refuses_an_inventory_without_a_gateway_before_running_anything(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"enclave_nodes": {"hosts": {"node1": {
        "ansible_host": "127.0.0.1", "ansible_port": 9}}}}}}))
    result = CliRunner().invoke(app, ["cert", "renew", "-i", str(inventory)])
    assert result.exit_code == 2, result.output
    assert "enclave_gateway" in result.output


def test_status_shows_the_served_certificate_and_warns_within_the_margin(pki: Path, tls_server: int) -> None:
    target = GatewayTarget("127.0.0.1", tls_server, pki / "ca.crt")
    plan = {"repo": "org/tiny", "revision": "a" * 40, "served_model_name": "tiny"}
    answers = {"gw": {"gateway": {"nginx": "active", "drained": []}}}
    now = datetime.now(UTC)
    for warn, warned in ((3, False), (21, True)):  # the certificate has 5 days left
        certificates = {"gw": cert.status_of(target, warn, now)}
        cluster = cluster_status(plan, [], ["gw"], answers, {}, None, certificates)
        (gateway,) = cluster.gateways
        assert gateway.certificate.startswith("valid until ") and "(4 days)" in gateway.certificate
        lines = summary_lines(cluster)
        assert f"certificate {gateway.certificate}" in next(line for line in lines if line.startswith("gateway gw:"))
        assert any(line.startswith("WARNING gw: the TLS certificate expires within 21 days") for line in lines) \
            is warned
        assert cluster.serving  # a warning, not a failure: the gateway still serves
        assert cluster.as_dict()["gateways"]["gw"]["warnings"] == gateway.warnings
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        description, warning = cert.status_of(GatewayTarget("127.0.0.1", closed.getsockname()[1], pki / "ca.crt"),
                                              21, now)
    assert description.startswith("unreadable (") and warning and "no TLS handshake" in warning


def test_renew_waits_for_the_reload_to_show_a_new_serial_but_not_forever(pki: Path, tls_server: int) -> None:
    target = GatewayTarget("127.0.0.1", tls_server, pki / "ca.crt")
    served = cert.served(target)
    older = cert.ServedCert(served.not_after, "0BAD", served.subject)
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # a clock the test moves: no real waiting, no timing in the test
        slept.append(seconds)
        now[0] += seconds

    assert settled(target, older, wait_s=30, clock=lambda: now[0], sleep=sleep).serial == "5EED"
    assert slept == []  # a new serial shows: returned at once
    assert settled(target, served, wait_s=2, step_s=0.5, clock=lambda: now[0], sleep=sleep).serial == "5EED"
    assert slept == [0.5, 0.5, 0.5, 0.5]  # the same files: handshakes every step until wait_s, then given up
