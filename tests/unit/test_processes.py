"""Cancelling stops Ansible's workers too, though they setsid() out of ansible-playbook's process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from enclave.runner.processes import Canceller, ansible_descendants

# A stand-in process tree with the shape of ansible-playbook's: a parent (its command line carries the marker the
# canceller looks for) that forks a worker, which leaves the process group with setsid() as Ansible's workers do.
TREE = """
import os, sys, time  # ansible-playbook stand-in
pid = os.fork()
if pid == 0:
    os.setsid()
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaping is up to PID 1, which differs between machines)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_canceller_remembers_setsid_workers_and_stops_them() -> None:
    # Its own session, as pexpect gives ansible-playbook under ansible-runner.
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        event = threading.Event()
        canceller = Canceller(event)
        assert canceller() is False and canceller.workers == set()
        event.set()
        assert canceller() is True
        assert {parent.pid, worker} <= canceller.workers
        # What ansible-runner does on cancel: kill the parent's process group, which misses the worker.
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert worker not in ansible_descendants(os.getpid()), "orphaned: no longer our descendant"
        assert running(worker)
        canceller.stop_leftovers(patience=5)
        deadline = time.monotonic() + 5
        while running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(worker)
    finally:
        if parent.poll() is None:
            parent.kill()
