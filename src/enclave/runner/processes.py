"""Stopping a cancelled ansible-playbook completely.

ansible-runner cancels by killing ansible-playbook's process group, but Ansible's worker processes call
setsid() and live in groups of their own: they would go on running the task they hold (an apt install, a
restart) after the operator pressed Ctrl-C, some of them for good. Every process of a run carries the run's
artifact directory in its environment (ansible-runner sets AWX_ISOLATED_DATA_DIR for its event callback), which
names exactly this run's processes, whoever their parent is by now.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from enclave.pids import pid_running, signal_pids

RUN_MARK = "AWX_ISOLATED_DATA_DIR"


def run_processes(artifact_dir: str) -> set[int]:
    """PIDs (other than ours) whose environment names `artifact_dir` as their run's."""
    entry = f"{RUN_MARK}={artifact_dir}".encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if entry in environ.split(b"\0"):
            found.add(int(proc.name))
    return found


def stop_run(artifact_dir: str, patience: float = 5.0) -> list[int]:
    """SIGTERM what is left of a run, SIGKILL what outlasts `patience`; returns the PIDs it had to stop."""
    stopped: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # Look again each round: a worker forked just before the parent died appears late.
        alive = {pid for pid in run_processes(artifact_dir) if pid_running(pid)}
        stopped |= alive
        signal_pids(alive, sig)
        deadline = time.monotonic() + patience
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = {pid for pid in alive if pid_running(pid)}
        if not alive and not {p for p in run_processes(artifact_dir) if pid_running(p)}:
            break
    return sorted(stopped)
