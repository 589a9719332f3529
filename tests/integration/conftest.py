"""Integration tier: real sandbox hosts (systemd-nspawn nodes over SSH) on this machine.

The session shares one sandbox named "test" (its own subnet, so a user's demo sandbox is left alone) and
one first deploy; tests that must tear down use sandboxes of their own.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.kit import importer
from enclave.sandbox import Sandbox, SandboxStatus
from tests.host_tools import TOOL_PACKAGES
from tests.required import skip_or_fail
from tests.tiers import SIGNAL_ENV

REPO = Path(__file__).resolve().parents[2]
# Stable across runs so a killed test run's sandbox is found (and recovered) by the next one.
STATE = Path(os.environ.get("ENCLAVE_TEST_STATE_DIR") or Path(tempfile.gettempdir()) / "enclave-integration-state")
# A developer may point the session at a sandbox of their own (kept afterwards): ENCLAVE_TEST_SANDBOX=NAME,
# with ENCLAVE_TEST_STATE_DIR where it lives.
SANDBOX = os.environ.get("ENCLAVE_TEST_SANDBOX") or "test"
ENCLAVE = str(Path(sys.executable).with_name("enclave"))
DEPLOY_LOG = STATE / "first-deploy-ansible.log"
# Why the session's sandbox may no longer be as deployed (one line per cause): a test on it failed, or a fixture
# could not undo its fault. The next test on the sandbox converges it first (`enclave deploy`, which changes only
# what differs) instead of every later module failing on a fault that is not its own.
DIRTY = STATE / "sandbox-dirty"
CONVERGE_TRIES = 2


def _missing() -> list[str]:
    reasons = []
    if platform.system() != "Linux" or os.geteuid() != 0:
        reasons.append("needs Linux and root")
    reasons += [f"needs {tool} (Debian package {pkg})" for tool, pkg in TOOL_PACKAGES.items()
                if shutil.which(tool) is None]
    return reasons


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    # A test that adds a node runs after every test that expects two; a test that tears the session's sandbox down
    # runs after every other test (it then pays for no deploy).
    items.sort(key=lambda item: 2 if item.get_closest_marker("destroys_sandbox")
               else 1 if item.get_closest_marker("grows_sandbox") else 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and "deployed" in getattr(item, "fixturenames", ()) and item.get_closest_marker(
            "destroys_sandbox") is None:
        mark_dirty(f"{item.nodeid} failed in {report.when}")


def mark_dirty(why: str) -> None:
    """Record that the session's sandbox may hold a fault nobody undid: the next test on it converges it first."""
    STATE.mkdir(parents=True, exist_ok=True)
    with DIRTY.open("a") as record:
        record.write(why + "\n")


@pytest.fixture(autouse=True)
def converged_when_dirty(request: pytest.FixtureRequest) -> None:
    """Before a test on the deployed sandbox: when an earlier test left it dirty, converge it with a plain deploy.
    A sandbox that two converges could not repair fails the tests that need it, with the causes, at once."""
    if "deployed" not in request.fixturenames or not DIRTY.exists():
        return
    request.getfixturevalue("deployed")
    causes = DIRTY.read_text()
    tries = causes.count("converge failed")
    if tries >= CONVERGE_TRIES:
        pytest.fail(f"the session's sandbox is dirty and {tries} converges did not repair it:\n{causes}")
    print(f"sandbox: converging before {request.node.nodeid}: {causes.strip()}")
    inventory = request.getfixturevalue("inventory")
    proc = enclave("deploy", "-i", str(inventory))
    if proc.returncode != 0:
        mark_dirty(f"converge failed before {request.node.nodeid} (exit {proc.returncode})")
        pytest.fail(f"converging the dirty sandbox failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    DIRTY.unlink()


@pytest.fixture(scope="session", autouse=True)
def integration_host() -> None:
    reasons = _missing()
    if reasons:
        skip_or_fail("integration tests cannot run here: " + "; ".join(reasons))
    os.environ["ENCLAVE_STATE_DIR"] = str(STATE)


def enclave(*args: str, check: bool | None = None, timeout: float = 1200,
            cli: str = ENCLAVE) -> subprocess.CompletedProcess[str]:
    """The installed CLI as an operator runs it (not a TTY here, so progress comes as plain lines); `cli` another
    installation of it (the one installed from the offline site kit)."""
    proc = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "COLUMNS": "200", "ENCLAVE_STATE_DIR": str(STATE)})
    if check and proc.returncode != 0:
        pytest.fail(f"enclave {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def ssh(inventory: Path, host: str, script: str, *, check: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a shell script on a sandbox host over SSH, as an operator would by hand; `stdin` is its input (how a
    key reaches a host without being on a command line)."""
    data = yaml.safe_load(inventory.read_text())["all"]
    address = next(group["hosts"][host]["ansible_host"] for group in data["children"].values()
                   if host in group["hosts"] and group["hosts"][host])
    argv = ["ssh", "-i", data["vars"]["ansible_ssh_private_key_file"], *data["vars"]["ansible_ssh_common_args"].split(),
            f"root@{address}", script]
    # Never the test run's own stdin: ssh leaves the descriptor it was given O_NONBLOCK, and every Ansible tool
    # started after it from the same stdin then refuses to run (a CI run failed so).
    source: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=check, **source)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxStatus]:
    box = Sandbox(SANDBOX, state_root=STATE)
    # The session starts on the sandbox's own sources, also on a kept sandbox that test_scale_out switched to the
    # offline site kit.
    status = box.up(nodes=2, offline_kit=False, report=lambda m: print(f"sandbox: {m}"))
    if status.inventory is not None:
        importer.settings_path(status.inventory).unlink(missing_ok=True)
    assert status.healthy, status
    yield status
    if SANDBOX == "test":
        # The sandbox's own servers' logs (packages, ntp, hub, wheels) outlive it, for a failure to be read after.
        shutil.rmtree(STATE / "sandbox-logs", ignore_errors=True)
        if (box.home / "logs").is_dir():
            shutil.copytree(box.home / "logs", STATE / "sandbox-logs")
        box.down()


@pytest.fixture(scope="session")
def inventory(sandbox: SandboxStatus) -> Path:
    assert sandbox.inventory is not None
    return sandbox.inventory


@pytest.fixture(scope="session")
def deployed(inventory: Path) -> subprocess.CompletedProcess[str]:
    """The first deploy of the session; tests that need converged hosts depend on it. Ansible's own output of it is
    kept as `DEPLOY_LOG` (the run's directory is pruned once 20 later runs exist)."""
    DEPLOY_LOG.unlink(missing_ok=True)  # never an earlier session's
    DIRTY.unlink(missing_ok=True)  # the first deploy converges whatever an earlier session left
    try:
        proc = enclave("deploy", "-i", str(inventory), check=True)
    finally:
        # make test (tests/tiers.py) starts the unit tier once the busiest part of this tier is over
        signal = os.environ.get(SIGNAL_ENV)
        if signal:
            Path(signal).touch()
    run_id = re.search(r"\(run ([\w-]+)\)", proc.stdout)
    if run_id:
        DEPLOY_LOG.write_text((STATE / "runs" / run_id.group(1) / "artifacts" / "run" / "stdout").read_text())
    return proc
