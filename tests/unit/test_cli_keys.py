"""`enclave keys add|rotate|revoke|list` through the CLI: the key shown once and nowhere else (not the audit
record, not the run's request), exit 2 with a message naming file or key before anything is written or run, the
keys file as the verbs leave it, and the one playbook run with the gateway role's `keys` entry point."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from enclave import paths
from enclave.cli import app
from enclave.cli import keys as keys_cli
from enclave.gateway import keys
from tests.unit.offline_cli import Runs, offline_runs
from tests.unit.test_inventory import write_inventory

runner = CliRunner()
KEY_IN_OUTPUT = re.compile(r"shown only now\): (\S+)")


@pytest.fixture
def runs(isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> Runs:
    """keys run offline: the playbook runs it asked for (exit code 0 unless a test sets `runs.exit_code`)."""
    return offline_runs(monkeypatch, keys_cli, run_id="20261205-080000-keys-abc123")


def _file(inventory: Path) -> dict[str, Any]:
    return yaml.safe_load(keys.keys_file(inventory).read_text())


def _audit_text() -> str:
    path = paths.audit_log()
    return path.read_text() if path.exists() else ""


def test_add_prints_the_key_once_and_nowhere_else(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    result = runner.invoke(app, ["keys", "add", "team-a", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    [key] = KEY_IN_OUTPUT.findall(result.output)
    assert result.output.count(key) == 1 and re.fullmatch(r"[A-Za-z0-9._~+/=-]{20,200}", key)
    assert _file(inventory)["gateway_api_keys"] == {"team-a": key}
    [request] = runs
    assert request.playbook == "keys.yml" and not request.extra_vars and key not in repr(request)
    [record] = [json.loads(line) for line in _audit_text().splitlines()]
    assert record["verb"] == "keys add" and record["arguments"]["name"] == "team-a"
    assert record["result"] == "ok" and record["runs"] == ["20261205-080000-keys-abc123"]
    assert key not in _audit_text()


def test_adding_an_existing_client_is_refused_before_anything_runs(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    assert runner.invoke(app, ["keys", "add", "team-a", "-i", str(inventory)]).exit_code == 0
    before = keys.keys_file(inventory).read_text()
    result = runner.invoke(app, ["keys", "add", "team-a", "-i", str(inventory)])
    assert result.exit_code == 2
    assert "client 'team-a' already has a key" in result.output and "Traceback" not in result.output
    assert keys.keys_file(inventory).read_text() == before and len(runs) == 1  # only the first add ran


@pytest.mark.parametrize("name", ["team a", "x" * 65, "a/b"])
def test_a_bad_client_name_is_refused(runs: Runs, tmp_path: Path, name: str) -> None:
    inventory = write_inventory(tmp_path)
    result = runner.invoke(app, ["keys", "add", name, "-i", str(inventory)])
    assert result.exit_code == 2 and "is not a client name" in result.output
    assert not keys.keys_file(inventory).exists() and runs == []


def test_keys_set_inline_in_the_inventory_are_refused_naming_the_file(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, all_vars={"gateway_api_keys": {"team-a": "a" * 30}})
    result = runner.invoke(app, ["keys", "rotate", "team-a", "-i", str(inventory)])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert str(inventory) in flat and "gateway_api_keys" in flat and "a" * 30 not in result.output
    assert not keys.keys_file(inventory).exists() and runs == []
    assert inventory.read_text().count("a" * 30) == 1  # the operator's file is untouched


def test_rotate_prints_only_the_new_key_and_keeps_the_old_for_the_grace(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    added = runner.invoke(app, ["keys", "add", "team-a", "-i", str(inventory)])
    [old] = KEY_IN_OUTPUT.findall(added.output)
    result = runner.invoke(app, ["keys", "rotate", "team-a", "--grace", "60s", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    [new] = KEY_IN_OUTPUT.findall(result.output)
    assert new != old and old not in result.output and "the old key works until" in result.output
    data = _file(inventory)
    assert data["gateway_api_keys"] == {"team-a": new}
    [retired] = data["gateway_retired_api_keys"]
    assert retired["name"] == "team-a" and retired["key"] == old
    record = json.loads(_audit_text().splitlines()[-1])
    assert record["verb"] == "keys rotate" and record["arguments"]["grace"] == "60s"
    assert old not in _audit_text() and new not in _audit_text()


def test_revoke_removes_the_client_and_unknown_clients_are_refused(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    for name in ("team-a", "team-b"):
        assert runner.invoke(app, ["keys", "add", name, "-i", str(inventory)]).exit_code == 0
    assert runner.invoke(app, ["keys", "rotate", "team-a", "-i", str(inventory)]).exit_code == 0
    result = runner.invoke(app, ["keys", "revoke", "team-a", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    data = _file(inventory)
    assert set(data["gateway_api_keys"]) == {"team-b"} and data["gateway_retired_api_keys"] == []
    assert KEY_IN_OUTPUT.findall(result.output) == []
    again = runner.invoke(app, ["keys", "revoke", "team-a", "-i", str(inventory)])
    assert again.exit_code == 2 and "no client 'team-a'" in again.output


def test_list_shows_dates_and_expiries_never_a_key(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    for name in ("team-a", "team-b"):
        assert runner.invoke(app, ["keys", "add", name, "-i", str(inventory)]).exit_code == 0
    assert runner.invoke(app, ["keys", "rotate", "team-b", "--grace", "2h", "-i", str(inventory)]).exit_code == 0
    result = runner.invoke(app, ["keys", "list", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    data = _file(inventory)
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert set(rows) == {"team-a", "team-b"}
    assert rows["team-a"][2] == "-" and rows["team-a"][3] == "-"
    assert rows["team-b"][2].endswith("Z") and rows["team-b"][3].endswith("Z")
    for value in [*data["gateway_api_keys"].values(), *(r["key"] for r in data["gateway_retired_api_keys"])]:
        assert value not in result.output


def test_a_failed_run_exits_1_and_says_the_file_changed(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    runs.exit_code = 1
    result = runner.invoke(app, ["keys", "add", "team-a", "-i", str(inventory)])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "did not take it" in flat and len(KEY_IN_OUTPUT.findall(result.output)) == 1
    assert json.loads(_audit_text())["result"] == "failed"


def test_with_a_vault_password_the_file_is_encrypted(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    password = tmp_path / "vault-pass"
    password.write_text("a vault password\n")
    result = runner.invoke(app, ["keys", "add", "team-a", "-i", str(inventory), "--vault-password-file",
                                 str(password)])
    assert result.exit_code == 0, result.output
    [key] = KEY_IN_OUTPUT.findall(result.output)
    text = keys.keys_file(inventory).read_text()
    assert text.startswith("$ANSIBLE_VAULT") and key not in text
    listed = runner.invoke(app, ["keys", "list", "-i", str(inventory)])
    assert listed.exit_code == 2 and "vault-encrypted" in listed.output
    listed = runner.invoke(app, ["keys", "list", "-i", str(inventory), "--vault-password-file", str(password)])
    assert listed.exit_code == 0 and "team-a" in listed.output and key not in listed.output


def test_apply_converges_the_file_as_it_is_and_drops_expired_old_keys(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    ring = keys.KeyRing({"team-a": "a" * 30, "team-b": "b" * 30},
                        [{"name": "team-a", "key": "o" * 30, "expires": 1_000_000_000},
                         {"name": "team-b", "key": "p" * 30, "expires": 9_000_000_000}])
    keys.save(keys.keys_file(inventory), ring, None, encrypted=False)
    result = runner.invoke(app, ["keys", "apply", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    assert KEY_IN_OUTPUT.findall(result.output) == [] and "a" * 30 not in result.output
    assert [r["key"] for r in _file(inventory)["gateway_retired_api_keys"]] == ["p" * 30]
    assert [r.playbook for r in runs] == ["keys.yml"]
    assert json.loads(_audit_text())["verb"] == "keys apply"


def test_a_bad_grace_is_refused_before_anything_runs(runs: Runs, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    assert runner.invoke(app, ["keys", "add", "team-a", "-i", str(inventory)]).exit_code == 0
    before = keys.keys_file(inventory).read_text()
    result = runner.invoke(app, ["keys", "rotate", "team-a", "--grace", "1w", "-i", str(inventory)])
    assert result.exit_code == 2 and "--grace '1w'" in result.output and "Traceback" not in result.output
    assert keys.keys_file(inventory).read_text() == before and len(runs) == 1
