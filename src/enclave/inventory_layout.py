"""Where the kit keeps its own files next to an operator's inventory (the internal CA, operator profiles, the plan).

Beside a hosts file they are plain directories: `<dir>/pki`, `<dir>/profiles`. Inside a directory inventory they
are dot-prefixed, `<dir>/.pki`, `<dir>/.profiles`: Ansible reads every file of every subdirectory of an inventory
directory as an inventory source, except names starting with a dot (and group_vars/host_vars), and its parse
warnings quote the lines it could not read: a CA private key among them would reach the run's output.
The gateway role's default gateway_ca_dir follows the same rule (playbooks/roles/gateway/defaults/main.yml).
"""

from __future__ import annotations

from pathlib import Path


def base_dir(inventory: Path) -> Path:
    """The directory an inventory's group_vars/ and the kit's files sit in."""
    return inventory if inventory.is_dir() else inventory.parent


def kit_dir(inventory: Path, name: str) -> Path:
    """`<base>/<name>` beside a hosts file, `<base>/.<name>` inside a directory inventory."""
    return base_dir(inventory) / (f".{name}" if inventory.is_dir() else name)


def ca_cert(inventory: Path) -> Path:
    """The kit's internal CA certificate that clients of the gateway trust."""
    return kit_dir(inventory, "pki") / "ca.crt"
