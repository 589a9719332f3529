"""Running the shipped checks against an inventory, in a pytest of their own."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from enclave import paths
from enclave.ansible_env import ansible_env
from enclave.checks.results import CheckResult, parse_junit
from enclave.errors import RunError

CHECKS_DIR = Path(__file__).resolve().parent
HOSTS_ENV = "ENCLAVE_VERIFY_HOSTS"


def run_checks(inventory: Path, *, hosts: list[str] | None = None, deep: bool = False,
               junit: Path | None = None, timeout: float = 3600,
               modules: tuple[str, ...] = ()) -> tuple[list[CheckResult], str]:
    """The results and pytest's own output. `hosts` limits the run (testinfra's --hosts would override the
    modules' own host groups, so the limit is applied at collection instead). `modules` runs only those check
    files (e.g. "test_weights.py"); empty runs them all."""
    env = {**os.environ, **ansible_env(inventory), "PYTHONDONTWRITEBYTECODE": "1"}
    ssh_control_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
    if hosts:
        env[HOSTS_ENV] = ",".join(hosts)
    return _pytest([f"--ansible-inventory={inventory}", *(["--deep"] if deep else [])], modules, env, junit, timeout)


def ssh_control_dir() -> Path:
    """Where the SSH master connections live (ansible.cfg's control_path_dir). testinfra reuses Ansible's
    ControlPath only when this directory exists; otherwise every command of every check opens a new SSH connection
    (verify of three hosts: 82 s instead of 12 s). Ansible creates it on its first connection; a controller whose
    first run is `enclave verify` must not pay for that."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(paths.ansible_cfg())
    return Path(config.get("ssh_connection", "control_path_dir", fallback="~/.ansible/cp")).expanduser()


def run_local_checks(modules: tuple[str, ...], *, timeout: float = 600) -> tuple[list[CheckResult], str]:
    """The shipped checks against this machine through testinfra's local backend, without an inventory (the
    roles' defaults stand for the host's variables): how the GPU smoke check runs the nvidia checks on a node."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop(HOSTS_ENV, None)
    return _pytest(["--hosts=local://"], modules, env, None, timeout)


def _pytest(options: list[str], modules: tuple[str, ...], env: dict[str, str], junit: Path | None,
            timeout: float) -> tuple[list[CheckResult], str]:
    with tempfile.TemporaryDirectory(prefix="enclave-verify-") as tmp:
        report = junit or Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", "-c", str(CHECKS_DIR / "pytest.ini"), "--rootdir", str(CHECKS_DIR),
                *options, f"--junitxml={report}", *([str(CHECKS_DIR / m) for m in modules] or [str(CHECKS_DIR)])]
        try:
            # stdin from /dev/null: testinfra's Ansible backend runs ansible-inventory, which refuses a
            # non-blocking stdin (enclave.runner.inventory).
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise RunError(f"the checks did not finish within {timeout:.0f} s") from exc
        # pytest: 0 passed, 1 some failed, 5 nothing collected; anything else is a problem of the run itself.
        if proc.returncode not in (0, 1, 5) or not report.exists():
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise RunError(f"the checks could not run (pytest exit {proc.returncode}): {tail}")
        return parse_junit(report), proc.stdout
