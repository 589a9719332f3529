"""offline_kit: with an imported offline site kit, the staging host holds it checked against its manifest (the stamp
names the kit's sha256) and enclave-kit-server serves that very manifest where every host's package source points."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.checks.settings import host_settings, render

testinfra_hosts = ["ansible://enclave_staging"]

UNIT = "enclave-kit-server.service"


@pytest.fixture
def kit(hostvars: dict[str, Any]) -> dict[str, Any]:
    settings = host_settings(hostvars, "offline_kit")
    if not settings.get("offline_kit_sha256"):
        pytest.skip("no offline site kit imported (enclave kit import)")
    return settings


def test_the_staged_kit_matched_its_manifest(host: Any, kit: dict[str, Any]) -> None:
    root = render(kit["offline_kit_root"], kit)
    sha = kit["offline_kit_sha256"]
    stamp = host.file(f"{root}/{sha[:16]}.verified")
    assert stamp.exists and stamp.content_string.strip() == sha, (
        f"{root}/{sha[:16]}: not staged and checked (rerun `enclave kit import` or `enclave deploy`)")


def test_the_kit_server_serves_the_kit_every_source_names(host: Any, kit: dict[str, Any]) -> None:
    assert host.service(UNIT).is_running, f"{UNIT} is not running"
    apt_url = next((uri for source in kit.get("enclave_apt_sources") or [] for uri in source.get("uris") or []
                    if kit["offline_kit_sha256"][:16] in uri), None)
    assert apt_url, "enclave_apt_sources names no URL of the imported kit"
    manifest = apt_url.rstrip("/").removesuffix("/apt") + "/KIT.json"
    served = host.run("curl -sf --max-time 10 %s | sha256sum", manifest)  # testinfra quotes the URL
    assert served.rc == 0 and served.stdout.split()[0] == kit["offline_kit_sha256"], (
        f"{manifest}: not served, or not the imported kit's manifest")
