"""The wheel carries the Ansible side: an `enclave` installed from it, outside the checkout, finds it; and a plain
`pip install llm-enclave` (no extras, in a venv of its own) starts, plans and deploys without the sandbox's extras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.recorded_facts import h200_node, host

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
                     "enclave/profiles/deepseek-v4-flash.yml", "enclave/hosttools/nodetool.py",
                     "enclave/share/playbooks/roles/enclave/files/hosttools/nodetool.py",
                     "enclave/share/playbooks/library/enclave_host_facts.py",
                     "enclave/share/playbooks/action_plugins/enclave_plan_revision.py"):
        assert required in names, required


def test_installed_wheel_works_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed copy comes first on the path; the venv provides the dependencies.
    env = {**os.environ, "PYTHONPATH": str(target), "ENCLAVE_STATE_DIR": str(tmp_path / "state")}
    probe = ("import enclave.paths as p; from enclave.runner.inventory import validate; "
             "print(p.share_dir()); validate(p.share_dir() / 'inventory' / 'h200-cluster', reachable=False)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target / "enclave" / "share")
    help_text = subprocess.run([sys.executable, "-m", "enclave", "deploy", "--help"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--inventory" in help_text


@pytest.fixture(scope="module")
def plain_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A brand-new venv holding the wheel and what it declares, resolved by pip from the index: what an operator
    gets from `pip install llm-enclave`. Nothing of the dev venv (numpy, pytest, ...) is visible in it."""
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                "--disable-pip-version-check", str(wheel)],
                               capture_output=True, text=True, timeout=900, check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


@pytest.fixture
def run_plain(plain_venv: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the venv's own `enclave` script from a directory outside the checkout, with no PYTHONPATH."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(ENCLAVE_STATE_DIR=str(tmp_path / "state"), COLUMNS="220",
               PATH=f"{plain_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(plain_venv / "bin" / "enclave"), *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    return run


def test_plain_install_has_none_of_the_sandbox_extra(plain_venv: Path) -> None:
    probe = "import importlib.util as u; print([m for m in ('numpy', 'safetensors', 'tokenizers') if u.find_spec(m)])"
    out = subprocess.run([str(plain_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]", f"the plain install pulled in {out.strip()}: the test would prove nothing"


@pytest.mark.parametrize("command", [["--help"], ["deploy", "--help"], ["verify", "--help"], ["plan", "--help"],
                                     ["sandbox", "--help"]])
def test_plain_install_starts(run_plain: Callable[..., subprocess.CompletedProcess[str]], command: list[str]) -> None:
    proc = run_plain(*command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Usage" in proc.stdout and "Traceback" not in proc.stderr


def test_plain_install_plans_from_recorded_facts(run_plain: Callable[..., subprocess.CompletedProcess[str]],
                                                 plain_venv: Path, tmp_path: Path) -> None:
    [shipped] = plain_venv.glob("lib/python*/site-packages/enclave/share/inventory/h200-cluster")
    inventory = tmp_path / "h200-cluster"
    shutil.copytree(shipped, inventory)
    revision = "0123456789abcdef" * 2 + "01234567"
    (inventory / "group_vars" / "all" / "revision.yml").write_text(f"enclave_model_revision: {revision}\n")
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"gpu01": h200_node("10.40.0.11/24"), "gpu02": h200_node("10.40.0.12/24"),
                                 "gw01": host(address="10.40.0.10/24", free_gb=900)}))
    proc = run_plain("plan", "-i", str(inventory), "--facts", str(facts))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "8 x NVIDIA H200" in proc.stdout and "ready to deploy" in proc.stdout


def test_plain_install_asks_for_the_extra_only_for_the_sandbox(
        run_plain: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # The bad subnet is a safety net: should the extra's check ever go, `up` stops on it before making any host.
    proc = run_plain("sandbox", "up", "--subnet", "not-a-network")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'llm-enclave[sandbox]'" in lines[0], proc.stderr
