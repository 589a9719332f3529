"""The wheel carries the Ansible side: an `enclave` installed from it, outside the checkout, finds it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    [built] = out.glob("llm_enclave-*.whl")
    return built


def test_wheel_ships_playbooks_templates_inventories_and_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("enclave/share/playbooks/site.yml", "enclave/share/playbooks/roles/base/tasks/main.yml",
                     "enclave/share/templates/apt/enclave.sources.j2", "enclave/share/ansible.cfg",
                     "enclave/share/inventory/h200-cluster/hosts.yml", "enclave/cli/__init__.py",
                     "enclave/checks/test_base.py", "enclave/checks/pytest.ini",
                     "enclave/profiles/deepseek-v4-flash.yml",
                     "enclave/weights/nodetool.py", "enclave/share/playbooks/library/enclave_host_facts.py"):
        assert required in names, required


def test_installed_wheel_works_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed copy comes first on the path; the venv provides the dependencies.
    env = {**os.environ, "PYTHONPATH": str(target), "ENCLAVE_STATE_DIR": str(tmp_path / "state")}
    probe = ("import enclave.paths as p; from enclave.plan.inventory import validate; "
             "print(p.share_dir()); validate(p.share_dir() / 'inventory' / 'h200-cluster', reachable=False)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target / "enclave" / "share")
    help_text = subprocess.run([sys.executable, "-m", "enclave", "deploy", "--help"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--inventory" in help_text
