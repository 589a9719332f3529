"""`enclave drain` / `undrain`: the run they ask for, and bad host names refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.cli.drain import drain_request
from enclave.errors import UsageError


def test_drain_request_runs_the_drain_playbook_with_the_host_and_state(tmp_path: Path) -> None:
    request = drain_request("node2", "drained", tmp_path / "hosts.yml")
    assert request.playbook == "drain.yml"
    assert dict(request.extra_vars) == {"gateway_drain_host": "node2", "gateway_drain_state": "drained"}
    assert drain_request("node2", "active", tmp_path).extra_vars["gateway_drain_state"] == "active"


@pytest.mark.parametrize("host", ["", "-e", "node 2"])
def test_bad_host_names_are_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(UsageError, match="is not an inventory host name"):
        drain_request(host, "drained", tmp_path)


def test_the_playbook_exists_and_uses_the_gateway_roles_drain_entry_point() -> None:
    playbook = Path(__file__).resolve().parents[2] / "playbooks" / "drain.yml"
    text = playbook.read_text()
    assert "tasks_from: drain.yml" in text and "hosts: enclave_gateway" in text
