"""Checks that run before any host is touched (issue #14, finding 8): a vaulted inventory read with the operator's
password file, the settings a deploy cannot go without, `-e` names, the one revision rule, a model name that stays a
profile name, drain of a host the inventory lacks, and inventory files too big to validate in seconds."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from enclave.cli import app, common
from enclave.errors import InventoryError, UsageError
from enclave.plan.inventory import MAX_FILE_BYTES
from enclave.plan.profiles import load_profile
from enclave.revision import check_revision
from enclave.runner.inventory import validate
from tests.unit.offline_cli import REV, SECRETS, SHIPPED, offline_deploy, write_facts
from tests.unit.test_inventory import write_inventory

runner = CliRunner()
VAULT = str(Path(sys.executable).parent / "ansible-vault")


def _encrypt(path: Path, password_file: Path) -> None:
    subprocess.run([VAULT, "encrypt", "--vault-password-file", str(password_file), str(path)], check=True,
                   capture_output=True, timeout=60)
    assert path.read_text().startswith("$ANSIBLE_VAULT")


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """The shipped example with a pinned revision, no secrets yet."""
    copy = tmp_path / "inv"
    shutil.copytree(SHIPPED, copy)
    (copy / "group_vars" / "all" / "revision.yml").write_text(f"enclave_model_revision: {REV}\n")
    return copy


@pytest.fixture
def runs(isolated_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    return offline_deploy(monkeypatch, write_facts(tmp_path))


def _deploy(inventory: Path, *args: str) -> Any:
    return runner.invoke(app, ["deploy", "-i", str(inventory), *args], env={"COLUMNS": "400"})


def test_a_vaulted_group_vars_file_is_read_with_the_password_file(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path)
    (tmp_path / "group_vars").mkdir()
    secret = tmp_path / "group_vars" / "all.yml"
    secret.write_text("vault_engine_api_key: " + "k" * 32 + "\n")
    password = tmp_path / "vault-pass"
    password.write_text("correct horse battery staple\n")
    _encrypt(secret, password)
    with pytest.raises(InventoryError, match="Ansible cannot read this inventory"):
        validate(inv, reachable=False)  # no password: Ansible cannot decrypt it
    read = validate(inv, reachable=False, vault_password_file=password)
    assert read.hostvars["n1"]["vault_engine_api_key"] == "k" * 32


def test_deploy_passes_its_vault_password_to_validation(runs: list[object], tmp_path: Path,
                                                        inventory: Path) -> None:
    """The layout docs recommend: plain names referring to vaulted values, in a vaulted file."""
    secrets = inventory / "group_vars" / "all" / "vault.yml"
    secrets.write_text(yaml.safe_dump({f"vault_{k}": v for k, v in SECRETS.items()}))
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(
        "".join(f'{k}: "{{{{ vault_{k} }}}}"\n' for k in SECRETS))
    password = tmp_path / "vault-pass"
    password.write_text("correct horse battery staple\n")
    _encrypt(secrets, password)
    result = _deploy(inventory)
    assert result.exit_code == 2 and runs == [], result.output
    assert "Ansible cannot read this inventory" in result.output and "Traceback" not in result.output
    result = _deploy(inventory, "--vault-password-file", str(password))
    assert result.exit_code == 0, result.output
    assert len(runs) == 1


@pytest.mark.parametrize(("name", "value", "said"), [
    ("engine_api_key", None, "hosts 'gpu01', 'gpu02': engine_api_key is missing"),
    ("engine_api_key", "short", "hosts 'gpu01', 'gpu02': engine_api_key is missing, shorter than 16"),
    ("gateway_api_keys", None, "host 'gw01': gateway_api_keys is empty"),
    ("gateway_api_keys", {"team a": "t" * 32}, "host 'gw01': gateway_api_keys entry 'team a'"),
    ("gateway_api_keys", {"team-a": "too short"}, "host 'gw01': gateway_api_keys entry 'team-a': a key is 20-200"),
    ("gateway_retired_api_keys", [{"name": "ghost", "key": "o" * 32, "expires": 1767225600}],
     "host 'gw01': gateway_retired_api_keys entry for 'ghost' must name a client"),
    ("gateway_retired_api_keys", [{"name": "team-a", "key": "short", "expires": 1767225600}],
     "host 'gw01': gateway_retired_api_keys entry for 'team-a' must name a client"),
    ("gateway_retired_api_keys", [{"name": "team-a", "key": "o" * 32, "expires": 12}],
     "host 'gw01': gateway_retired_api_keys entry for 'team-a' must name a client"),
    ("weights_source", None, "host 'gw01': weights_source must be"),
    ("weights_source", {"type": "s3"}, "type 's3' is not one of hf, local, http"),
    ("weights_source", {"type": "local"}, "type local needs a path"),
])
def test_deploy_without_a_must_have_setting_touches_no_host(runs: list[object], inventory: Path, name: str,
                                                            value: Any, said: str) -> None:
    settings = {k: v for k, v in SECRETS.items() if k != name} | ({name: value} if value is not None else {})
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(yaml.safe_dump(settings))
    result = _deploy(inventory)
    assert result.exit_code == 2, result.output
    assert runs == []  # no ansible-playbook run started
    assert said in result.output and "Traceback" not in result.output
    assert "t" * 32 not in result.output and "o" * 32 not in result.output  # a key never reaches the output


def test_must_have_settings_follow_tags_and_extra_vars(runs: list[object], inventory: Path) -> None:
    result = _deploy(inventory, "--tags", "base,firewall")  # no role that needs them
    assert result.exit_code == 0, result.output
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(
        yaml.safe_dump({k: v for k, v in SECRETS.items() if k != "engine_api_key"}))
    result = _deploy(inventory, "-e", "engine_api_key=" + "e" * 32)  # -e outranks the inventory
    assert result.exit_code == 0, result.output
    assert len(runs) == 2


def test_a_misspelt_extra_var_is_named_with_a_suggestion(runs: list[object], inventory: Path) -> None:
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(yaml.safe_dump(SECRETS))
    result = _deploy(inventory, "-e", "enclave_modle_revision=" + REV)
    assert result.exit_code == 2 and runs == [], result.output
    assert "unknown variable 'enclave_modle_revision'" in result.output
    assert "did you mean 'enclave_model_revision'?" in result.output


def test_one_revision_rule_for_the_inventory_and_update(tmp_path: Path) -> None:
    assert check_revision(REV, "x") == REV
    for bad in ("main", "v1.0", REV.upper(), REV + "0", None):
        with pytest.raises(UsageError, match="must be a 40-hex commit id"):
            check_revision(bad, "x")
    result = runner.invoke(app, ["update", "-i", str(tmp_path / "nowhere"), "--model-revision", "main"])
    assert result.exit_code == 2  # up front: before the inventory (which does not exist) is read
    assert "--model-revision must be a 40-hex commit id" in result.output and "nowhere" not in result.output


def test_a_model_name_never_leaves_the_profiles_directories(tmp_path: Path) -> None:
    (tmp_path / "evil.yml").write_text("repo: a/b\n")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for name in ("../evil", "/etc/passwd", "a/b", "..", ""):
        with pytest.raises(UsageError, match="must be a model profile name"):
            load_profile(name, profiles)
    inv = write_inventory(tmp_path, all_vars={"enclave_model": "../evil"})
    with pytest.raises(InventoryError, match=r"hosts.yml: enclave_model in group 'all' must be a model profile"):
        validate(inv, reachable=False)


def test_drain_of_a_host_the_inventory_lacks_stops_up_front(isolated_state: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from enclave.cli import drain as drain_cli

    started: list[object] = []
    monkeypatch.setattr(common, "validate", lambda path, **kw: validate(path, **{**kw, "reachable": False}))
    monkeypatch.setattr(drain_cli, "run_with_progress", lambda *a, **k: started.append(a))
    inv = write_inventory(tmp_path)
    result = runner.invoke(app, ["drain", "nosuchhost", "-i", str(inv)])
    assert result.exit_code == 2 and started == []
    assert "no host 'nosuchhost' in enclave_nodes (nodes: n1, n2)" in result.output


def test_an_oversized_inventory_file_is_refused_unread(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path)
    (tmp_path / "group_vars").mkdir()
    big = tmp_path / "group_vars" / "all.yml"
    big.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(InventoryError, match=rf"all.yml: \d+ bytes; an inventory file is at most {MAX_FILE_BYTES}"):
        validate(inv, reachable=False)


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    inv = write_inventory(tmp_path)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("\n".join(lines) + "\n")
    with pytest.raises(InventoryError, match=r"all\.yml: more than 200000 values once its YAML aliases are expanded"):
        validate(inv, reachable=False)


def test_a_plugin_config_is_not_taken_for_groups(tmp_path: Path) -> None:
    """Top-level keys of a plugin's YAML (constructed, ...) are settings: only real groups must be mappings."""
    from enclave.plan.inventory import collect_variables

    write_inventory(tmp_path)
    (tmp_path / "constructed.yml").write_text("plugin: ansible.builtin.constructed\nstrict: false\n")
    assert {f.where for f in collect_variables(tmp_path)} >= {"group 'all'"}
    (tmp_path / "constructed.yml").write_text("enclave_nodes: [n1]\n")  # not a plugin: a group as a list
    with pytest.raises(InventoryError, match=r"constructed\.yml: group 'enclave_nodes' must be a mapping"):
        collect_variables(tmp_path)


def _in_a_terminal(argv: list[str], answer: str, timeout: float = 90) -> tuple[int, str]:
    """Run the installed CLI on a pseudo-terminal as an operator would, typing `answer` at its password prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, with the pty as its controlling terminal
        os.execv(argv[0], argv)  # noqa: S606 - an argv, no shell
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.5)[0]:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"Vault password:" in output:
                os.write(fd, answer.encode() + b"\n")
                answered = True
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_ask_vault_pass_reads_the_password_at_the_terminal_and_leaves_no_file(
        tmp_path: Path, inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = inventory / "group_vars" / "all" / "vault.yml"
    secrets.write_text(yaml.safe_dump({f"vault_{k}": v for k, v in SECRETS.items()}))
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(
        "".join(f'{k}: "{{{{ vault_{k} }}}}"\n' for k in SECRETS))
    password = "correct horse battery staple"
    (tmp_path / "vault-pass").write_text(password + "\n")
    _encrypt(secrets, tmp_path / "vault-pass")
    monkeypatch.setenv("ENCLAVE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    argv = [str(Path(sys.executable).with_name("enclave")), "plan", "-i", str(inventory),
            "--facts", str(write_facts(tmp_path)), "--ask-vault-pass"]
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    before = set(scratch.glob("enclave-vault-*"))

    code, output = _in_a_terminal(argv, "not the password")
    assert code == 2, output
    assert "Ansible cannot read this inventory" in output and "Traceback" not in output

    code, output = _in_a_terminal(argv, password)
    assert code == 0, output
    assert "ready to deploy" in output
    assert password not in output  # the terminal did not echo it
    assert set(scratch.glob("enclave-vault-*")) == before  # the run's password file is gone


def test_ask_vault_pass_without_a_terminal_says_what_to_do_instead(inventory: Path) -> None:
    result = runner.invoke(app, ["plan", "-i", str(inventory), "--ask-vault-pass"], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "needs a terminal" in result.output and "--vault-password-file" in result.output
    result = runner.invoke(app, ["deploy", "-i", str(inventory), "--ask-vault-pass", "--vault-password-file",
                                 str(inventory)], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "give one of them" in result.output, result.output
