"""The vault password for one CLI run: a file the operator names, or one asked for at the terminal.

Ansible reads the password only from a file (or its own prompt, which ansible-runner cannot reach through), and
a password must never be on a command line. So an asked password goes into a 0600 file in a fresh 0700 directory,
in memory (/dev/shm) where the system has it, that lives exactly as long as the run and is removed afterwards,
whatever happens.
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from enclave.errors import UsageError

# The password file of the run in progress: every Ansible tool enclave starts reads it (ansible_env), so the
# planning reads, the playbook and the checks after it all open the same vaulted variables.
_ACTIVE: list[Path] = []

MEMORY_DIR = Path("/dev/shm")  # noqa: S108 - only a parent: mkdtemp makes a private 0700 directory in it


def active() -> Path | None:
    """The vault password file of the run in progress, if it has one."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def _in_use(path: Path | None) -> Iterator[Path | None]:
    if path is None:
        yield None
        return
    _ACTIVE.append(path)
    try:
        yield path
    finally:
        _ACTIVE.remove(path)


def _scratch_dir() -> str | None:
    return str(MEMORY_DIR) if MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK) else None


@contextmanager
def vault_password_file(given: Path | None, ask: bool, *,
                        prompt: Callable[[str], str] = getpass.getpass,
                        interactive: Callable[[], bool] = lambda: sys.stdin.isatty()) -> Iterator[Path | None]:
    """The password file to hand to Ansible for this run, or None when the inventory needs none."""
    if given is not None and ask:
        raise UsageError("--vault-password-file and --ask-vault-pass: give one of them")
    if not ask:
        if given is not None and not given.expanduser().is_file():
            raise UsageError(f"--vault-password-file {given}: no such file")
        with _in_use(given.expanduser().resolve() if given is not None else None) as path:
            yield path
        return
    if not interactive():
        raise UsageError("--ask-vault-pass needs a terminal to ask on; without one pass --vault-password-file FILE "
                         "(a file only you can read, mode 0600)")
    secret = prompt("Vault password: ")
    if not secret:
        raise UsageError("--ask-vault-pass: no password given")
    with tempfile.TemporaryDirectory(prefix="enclave-vault-", dir=_scratch_dir()) as scratch:
        path = Path(scratch) / "password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        with _in_use(path):
            yield path
