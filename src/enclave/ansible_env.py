"""The environment enclave gives Ansible's own tools (ansible-playbook, ansible-inventory, testinfra)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from enclave import paths


def ansible_env() -> dict[str, str]:
    """What Ansible needs beyond the caller's environment; nothing secret is added here."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        "ANSIBLE_CONFIG": str(paths.ansible_cfg()),
        # Runner and testinfra start `ansible-playbook` by name: from an unactivated venv it is not on PATH.
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        # ansible-runner turns host key checking off unless told; keep the operator's choice or the safe default.
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }
