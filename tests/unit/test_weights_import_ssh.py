"""`enclave weights import` hands rsync its SSH command as one `-e` string, which rsync splits again on spaces
(honouring quotes): the inventory's key path and port must each stay one word however they are spelled."""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2
import yaml

TASKS = Path(__file__).resolve().parents[2] / "playbooks" / "roles" / "weights" / "tasks" / "import.yml"


def ssh_command(**hostvars: object) -> list[str]:
    """The task's ssh_command rendered as Ansible would (quote is shlex.quote there too), split as rsync splits it."""
    task = next(t for t in yaml.safe_load(TASKS.read_text()) if "ssh_command" in t.get("vars", {}))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701 - a shell command, not HTML
    env.filters["quote"] = shlex.quote
    return shlex.split(env.from_string(task["vars"]["ssh_command"]).render(**hostvars))


def test_a_key_path_with_a_space_stays_one_word() -> None:
    argv = ssh_command(ansible_port=2222, ansible_ssh_private_key_file="/srv/site keys/id ed25519",
                       ansible_ssh_common_args="-o StrictHostKeyChecking=yes -o 'UserKnownHostsFile=/k/known hosts'")
    assert argv == ["ssh", "-p", "2222", "-i", "/srv/site keys/id ed25519", "-o", "StrictHostKeyChecking=yes",
                    "-o", "UserKnownHostsFile=/k/known hosts"]


def test_a_key_path_cannot_add_options() -> None:
    argv = ssh_command(ansible_ssh_private_key_file="/k/id -o ProxyCommand=touch /tmp/x")
    assert argv == ["ssh", "-p", "22", "-i", "/k/id -o ProxyCommand=touch /tmp/x"]
