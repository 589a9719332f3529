"""Cancelling stops Ansible's workers too, though they setsid() out of ansible-playbook's process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from enclave.pids import pid_running
from enclave.runner.processes import run_processes, stop_run

# A process tree with the shape of ansible-playbook's under ansible-runner: a parent in a session of its own that
# forks a worker, which leaves the process group with setsid() as Ansible's workers do. The worker says its PID
# only after setsid(): had the parent said it, a loaded machine could run the test's killpg before the worker left
# the group, killing it too (a rehearsal saw that: stop_run then found nothing left to stop).
TREE = """
import os, time
if os.fork() == 0:
    os.setsid()
    print(os.getpid(), flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def test_stop_run_finds_and_stops_the_orphaned_worker(tmp_path: Path) -> None:
    artifacts = str(tmp_path / "artifacts" / "run")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, "AWX_ISOLATED_DATA_DIR": artifacts + "-other-run"})
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True,
                              start_new_session=True, env={**os.environ, "AWX_ISOLATED_DATA_DIR": artifacts})
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert run_processes(artifacts) == {parent.pid, worker}
        # What ansible-runner does on cancel: kill the parent's process group, which misses the worker.
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert pid_running(worker)
        assert stop_run(artifacts, patience=5) == [worker]
        deadline = time.monotonic() + 5
        while pid_running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_running(worker)
        assert other.poll() is None, "another run's process is left alone"
    finally:
        for proc in (parent, other):
            if proc.poll() is None:
                proc.kill()
