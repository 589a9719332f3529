"""gateway: what a client on the controller's network sees: TLS that verifies with a certificate not about to
expire, 401 without a key, 200 with one (once engines serve), and 404 off the endpoint allow-list."""

from __future__ import annotations

import http.client
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave import paths
from enclave.checks.settings import host_settings, render
from enclave.gateway import cert
from enclave.gateway.client import GatewayTarget
from enclave.inventory_layout import base_dir, ca_cert

testinfra_hosts = ["ansible://enclave_gateway"]

# Paths vLLM serves that clients must never reach through the gateway.
OFF_LIST = ("/metrics", "/v1/tokenize", "/v1/load_lora_adapter", "/docs", "/server_info")


@pytest.fixture
def gateway(hostvars: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    settings = host_settings(hostvars, "gateway")
    inventory = Path(request.config.getoption("ansible_inventory") or ".").resolve()
    if settings.get("gateway_tls_cert_file"):
        ca: Path | None = None  # the operator's certificate: the controller's own trust store judges it
    elif "gateway_ca_dir" in hostvars:
        where = render(hostvars["gateway_ca_dir"], {**settings, "inventory_dir": str(base_dir(inventory))})
        ca = Path(where) / "ca.crt"
    else:
        ca = ca_cert(inventory)  # the role's default, by the same rule
    keys = settings.get("gateway_api_keys") or {}
    if not isinstance(keys, dict) or not all(isinstance(k, str) for k in keys.values()):
        pytest.skip("gateway_api_keys are not readable here (vaulted?): pass the vault password to verify")
    return {"address": str(hostvars.get("ansible_host") or hostvars["inventory_hostname"]),
            "port": int(settings["gateway_https_port"]), "ca": ca,
            "key": keys[checking_client(keys, settings.get("gateway_client_limits"))] if keys else None,
            "paths": list(settings["gateway_api_paths"]), "warn_days": cert.warn_days(settings)}


def checking_client(keys: dict[str, str], limits: Any) -> str:
    """The client whose key the checks use: the first (by name) without per-client limits, so an operator's
    narrowed client (fewer endpoints, a low rate) never fails the checks; else the first."""
    narrowed = set(limits) if isinstance(limits, dict) else set()
    return next((name for name in sorted(keys) if name not in narrowed), sorted(keys)[0])


def _request(gateway: dict[str, Any], method: str, path: str, key: str | None) -> int:
    context = ssl.create_default_context(cafile=str(gateway["ca"]) if gateway["ca"] else None)
    conn = http.client.HTTPSConnection(gateway["address"], gateway["port"], context=context, timeout=60)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_tls_verifies(gateway: dict[str, Any]) -> None:
    where = f"the kit's CA {gateway['ca']}" if gateway["ca"] else "the controller's trust store"
    if gateway["ca"] is not None and not gateway["ca"].is_file():
        pytest.fail(f"the kit's CA certificate {gateway['ca']} is missing on this controller")
    try:
        _request(gateway, "GET", "/health", None)
    except ssl.SSLCertVerificationError as exc:
        pytest.fail(f"the gateway's certificate does not verify with {where}: {exc.verify_message}")
    except OSError as exc:
        pytest.fail(f"cannot reach the gateway at {gateway['address']}:{gateway['port']}: {exc}")


def test_tls_certificate_is_not_about_to_expire(gateway: dict[str, Any]) -> None:
    # The certificate nginx serves now, read in a verified handshake as a client would (test_tls_verifies says
    # why a handshake fails); `enclave cert renew` replaces it.
    try:
        served = cert.served(GatewayTarget(gateway["address"], gateway["port"], gateway["ca"]))
    except cert.CertError as exc:
        pytest.skip(f"no certificate to judge: {exc}")
    problem = cert.problem(served, datetime.now(UTC), gateway["warn_days"])
    assert problem is None, problem


def test_no_key_is_401(gateway: dict[str, Any]) -> None:
    for path in gateway["paths"]:
        status = _request(gateway, "POST", path, None)
        assert status == 401, f"POST {path} without a key answered {status}, not 401"


def test_off_list_paths_are_404(gateway: dict[str, Any]) -> None:
    wrong = {p: s for p in OFF_LIST if p not in gateway["paths"]
             and (s := _request(gateway, "GET", p, gateway["key"])) != 404}
    assert not wrong, f"paths off the allow-list answered: {wrong} (should be 404)"


def _engines_deployed() -> bool:
    site = yaml.safe_load((paths.playbooks_dir() / "site.yml").read_text()) or []
    return any(p.get("ansible.builtin.import_playbook") == "engine.yml" for p in site)


def test_key_is_200(gateway: dict[str, Any]) -> None:
    if not _engines_deployed():
        pytest.skip("this kit's site.yml deploys no engines: nothing answers behind the gateway")
    assert gateway["key"], "gateway_api_keys is empty"
    status = _request(gateway, "GET", "/v1/models", gateway["key"])
    assert status == 200, f"GET /v1/models with a valid key answered {status} (502/503: no engine answers)"
