"""The shipped checks reach hosts over Ansible's SSH master connections, not one new SSH session per command."""

from __future__ import annotations

from pathlib import Path

import pytest
from testinfra.utils.ansible_runner import get_ansible_config, get_ansible_host

from enclave import paths
from enclave.checks import runner

INVENTORY = {"_meta": {"hostvars": {"node1": {
    "ansible_host": "127.0.0.1", "ansible_user": "root", "ansible_ssh_private_key_file": "/keys/id_ed25519",
    "ansible_ssh_common_args": "-o UserKnownHostsFile=/keys/known_hosts"}}},
    "all": {"children": ["ungrouped"]}, "ungrouped": {"hosts": ["node1"]}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ANSIBLE_CONFIG", str(paths.ansible_cfg()))
    return tmp_path


def ssh_command(host: str) -> str:
    """The ssh command line testinfra builds for a check's command on `host` (what `enclave verify` runs)."""
    built = get_ansible_host(get_ansible_config(), INVENTORY, host)
    assert built is not None
    # testinfra has no public way to show the command; the private builder is what its run() uses
    template, args = built.backend._build_ssh_command("true")
    return " ".join(template) % tuple(args)


def test_the_checks_share_the_master_connection_ansible_keeps(home: Path) -> None:
    control = runner.ssh_control_dir()
    assert control == home / ".ansible" / "cp"
    control.mkdir(parents=True)
    command = ssh_command("node1")
    assert "-o ControlMaster=auto" in command
    # the path Ansible's own connections use, so a verify after a deploy opens no new session at all
    assert f"-o ControlPath={control}/%C " in command, command


def test_without_the_directory_testinfra_would_open_a_session_per_command(home: Path) -> None:
    """Why run_checks creates the directory: testinfra drops the ControlPath when it is missing."""
    assert "ControlPath" not in ssh_command("node1")
    runner.ssh_control_dir().mkdir(parents=True)
    assert "ControlPath" in ssh_command("node1")


def test_run_checks_makes_the_directory_before_testinfra_looks(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(runner, "_pytest", lambda *args: seen.append(runner.ssh_control_dir().is_dir()) or ([], ""))
    runner.run_checks(home / "hosts.yml")
    assert seen == [True]
    assert runner.ssh_control_dir().stat().st_mode & 0o777 == 0o700
