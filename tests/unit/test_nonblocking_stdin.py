"""enclave started with a non-blocking stdin (an ssh run earlier from the same CI job or terminal leaves the shared
descriptor O_NONBLOCK) must still read inventories: Ansible's tools refuse such a stdin outright. A CI run failed
this way ("Ansible requires blocking IO on stdin/stdout/stderr")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path
from enclave.runner.inventory import ansible_inventory
print(sorted(ansible_inventory(Path(sys.argv[1])).hosts()))
"""


def test_an_inventory_is_read_with_a_non_blocking_stdin(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    node1:\n      ansible_host: 127.0.0.1\n")
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(read_end, False)
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(inventory)], stdin=read_end,
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['node1']"
