"""A virtual environment of the engine on this machine, installed from the wheelhouse exactly as nodes do.

Test-side only: the unit tests check rendered engine arguments with vLLM's own parser in it
(tests/unit/test_engine_unit.py), and the GPU check installs its engine with the same pip command.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from enclave.engine.wheelhouse import Wheelhouse
from enclave.errors import EnclaveError
from enclave.locks import file_lock


def install_command(pip: Path, wheelhouse: str) -> list[str]:
    """The one install command, for nodes and controller alike: the lock file, nothing else."""
    return [str(pip), "install", "--no-index", "--no-deps", "--require-hashes", "--disable-pip-version-check",
            "--find-links", wheelhouse, "--requirement", f"{wheelhouse.rstrip('/')}/requirements.txt"]


def ensure_venv(wheelhouse: Wheelhouse, root: Path, report: Callable[[str], None] = lambda _: None) -> Path:
    """~/.cache/enclave/engine-venvs/<build>: created once per wheelhouse, complete when its stamp exists."""
    venv = root / wheelhouse.build.name
    stamp = venv / ".enclave-installed"
    lock = (wheelhouse.path / "requirements.txt").read_text()
    if stamp.is_file() and stamp.read_text() == lock:
        return venv
    with file_lock(venv.with_name(venv.name + ".lock")):
        if stamp.is_file() and stamp.read_text() == lock:
            return venv
        report(f"installing {wheelhouse.build.name} into {venv} (once)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        proc = subprocess.run(install_command(venv / "bin" / "pip", str(wheelhouse.path)), capture_output=True,
                              text=True, check=False, timeout=1800)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            raise EnclaveError(f"installing {wheelhouse.build.name} into {venv} failed:\n{tail}")
        stamp.write_text(lock)
    return venv
