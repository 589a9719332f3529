"""The kit's files next to an inventory (CA, operator profiles) stay out of what Ansible reads as inventory, in a
hosts-file inventory and in a directory inventory alike; the gateway role's default CA directory agrees with the
CLI's (real ansible-inventory and ansible-playbook)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from enclave.inventory_layout import ca_cert, kit_dir
from enclave.plan.profiles import search_dirs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY_LINE = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
HOSTS = "all:\n  children:\n    enclave_gateway:\n      hosts:\n        gw:\n          ansible_connection: local\n"


def layout(directory: Path, *, hidden: bool) -> None:
    """An inventory directory holding what the kit writes there: CA key, a profile, the plan."""
    directory.mkdir()
    (directory / "hosts.yml").write_text(HOSTS)
    prefix = "." if hidden else ""
    (directory / f"{prefix}pki").mkdir()
    (directory / f"{prefix}pki" / "ca.key").write_text(
        f"-----BEGIN PRIVATE KEY-----\n{KEY_LINE}\n-----END PRIVATE KEY-----\n")
    (directory / f"{prefix}profiles").mkdir()
    (directory / f"{prefix}profiles" / "mine.yml").write_text("name: mine\nengine:\n  args: []\n")
    (directory / "group_vars" / "all").mkdir(parents=True)
    (directory / "group_vars" / "all" / "enclave_plan.yml").write_text("enclave_plan: {}\n")


def inventory_output(source: Path) -> str:
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(source), "--list", "-v"],
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout + proc.stderr


def test_paths_beside_a_hosts_file_and_inside_a_directory(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(HOSTS)
    assert ca_cert(hosts) == tmp_path / "pki" / "ca.crt"
    assert kit_dir(tmp_path, "pki") == tmp_path / ".pki"
    assert search_dirs(hosts)[0] == tmp_path / "profiles"
    assert search_dirs(tmp_path)[0] == tmp_path / ".profiles"


def test_ansible_reads_none_of_the_kits_files_in_a_directory_inventory(tmp_path: Path) -> None:
    layout(tmp_path / "inv", hidden=True)
    out = inventory_output(tmp_path / "inv")
    assert "Unable to parse" not in out and "PRIVATE" not in out and KEY_LINE not in out, out
    assert '"gw"' in out


def test_without_the_dot_ansible_parses_the_key_and_quotes_it(tmp_path: Path) -> None:
    """Why the rule exists: the same files without the dot are read as inventory and quoted in warnings."""
    layout(tmp_path / "inv", hidden=False)
    out = inventory_output(tmp_path / "inv")
    assert "Unable to parse" in out and "pki/ca.key" in out, out


@pytest.mark.parametrize("directory", [True, False])
def test_the_gateway_roles_default_ca_dir_is_the_clis(tmp_path: Path, directory: bool) -> None:
    layout(tmp_path / "inv", hidden=True)
    source = tmp_path / "inv" if directory else tmp_path / "inv" / "hosts.yml"
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: gw\n  gather_facts: false\n"
        f"  vars_files: [{REPO / 'playbooks/roles/gateway/defaults/main.yml'}]\n"
        "  tasks:\n    - ansible.builtin.debug: {msg: 'ca_dir={{ gateway_ca_dir }}'}\n")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(source), str(play)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert f"ca_dir={ca_cert(source).parent}" in proc.stdout, proc.stdout
