"""Every playbook enclave runs goes through mitogen's strategy (src/enclave/ansible_env.py): a real
ansible-playbook started with enclave's environment runs its modules inside mitogen's interpreter, and an
operator's ANSIBLE_STRATEGY still wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from enclave.ansible_env import STRATEGY, ansible_env


def parent_of_module(tmp: Path, env: dict[str, str]) -> str:
    """The command line of the process that ran a module on the (implicit) localhost."""
    play = [{"name": "Who runs modules", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Parent", "ansible.builtin.shell": "tr '\\0' ' ' < /proc/$PPID/cmdline", "register": "parent",
         "changed_when": False},
        {"name": "Keep it", "ansible.builtin.copy": {"content": "{{ parent.stdout }}", "dest": str(tmp / "parent"),
                                                     "mode": "0600"}}]}]
    (tmp / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), str(tmp / "play.yml")],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=300, check=False,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return (tmp / "parent").read_text()


def test_enclave_runs_playbooks_under_mitogen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    env = ansible_env(tmp_path / "hosts.yml")
    assert env["ANSIBLE_STRATEGY"] == STRATEGY
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / f"{STRATEGY}.py").is_file()
    # mitogen names its interpreter in its command line; Ansible's own strategy runs the module from a shell
    assert "mitogen" in parent_of_module(tmp_path, {**_base(), **env})


def test_the_operators_strategy_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_STRATEGY", "linear")
    env = ansible_env(tmp_path / "hosts.yml")
    assert "ANSIBLE_STRATEGY_PLUGINS" not in env
    assert "mitogen" not in parent_of_module(tmp_path, {**_base(), **env})


def _base() -> dict[str, str]:
    """The caller's environment without Ansible settings of its own, the operator's strategy choice kept."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") or k == "ANSIBLE_STRATEGY"}
