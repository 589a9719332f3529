"""`enclave weights import` and the offline kit's copy hand rsync their SSH command as one `-e` string
(enclave_rsync_ssh), which rsync splits again on spaces (honouring quotes): the inventory's key path and port must
each stay one word however they are spelled."""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2
import yaml

ROLES = Path(__file__).resolve().parents[2] / "playbooks" / "roles"
USERS = (ROLES / "weights" / "tasks" / "import.yml", ROLES / "offline_kit" / "tasks" / "copy.yml")


def ssh_command(**hostvars: object) -> list[str]:
    """enclave_rsync_ssh rendered as Ansible would (quote is shlex.quote there too), split as rsync splits it."""
    template = yaml.safe_load((ROLES / "enclave" / "vars" / "main.yml").read_text())["enclave_rsync_ssh"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701 - a shell command, not HTML
    env.filters["quote"] = shlex.quote
    return shlex.split(env.from_string(template).render(**hostvars))


def test_both_copies_to_the_staging_host_use_it() -> None:
    for path in USERS:
        argv = [t for t in yaml.safe_load(path.read_text()) if "rsync" in str(t.get("ansible.builtin.command"))]
        assert argv and all("'-e', enclave_rsync_ssh]" in str(t) for t in argv), path


def test_a_key_path_with_a_space_stays_one_word() -> None:
    argv = ssh_command(ansible_port=2222, ansible_ssh_private_key_file="/srv/site keys/id ed25519",
                       ansible_ssh_common_args="-o StrictHostKeyChecking=yes -o 'UserKnownHostsFile=/k/known hosts'")
    assert argv == ["ssh", "-p", "2222", "-i", "/srv/site keys/id ed25519", "-o", "StrictHostKeyChecking=yes",
                    "-o", "UserKnownHostsFile=/k/known hosts"]


def test_a_key_path_cannot_add_options() -> None:
    argv = ssh_command(ansible_ssh_private_key_file="/k/id -o ProxyCommand=touch /tmp/x")
    assert argv == ["ssh", "-p", "22", "-i", "/k/id -o ProxyCommand=touch /tmp/x"]
