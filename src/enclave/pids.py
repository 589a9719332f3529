"""Processes on this machine, by PID: shared by the sandbox (its nodes and services) and the runner (a
cancelled run's leftovers)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path


def pid_running(pid: int) -> bool:
    """Alive and not a zombie (a dead child waiting to be reaped runs nothing and reads as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
