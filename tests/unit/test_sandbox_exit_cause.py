"""Why a sandbox node's systemd-nspawn is not running, as the boot error reports it (real child processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from enclave.sandbox import system

# A child that runs until killed, in Python: every host tool a test runs must be in the Makefile's package list.
NAP = [sys.executable, "-c", "import time; time.sleep(30)"]


def zombie(argv: list[str]) -> int:
    """A child that has ended and is not yet reaped, as nspawn is when the boot wait finds it gone."""
    pid = subprocess.Popen(argv).pid
    for _ in range(200):
        if not system.pid_alive(pid):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{argv} did not end")


def test_an_exit_status_is_reported_and_the_child_reaped() -> None:
    pid = zombie([sys.executable, "-c", "raise SystemExit(3)"])
    assert system.why_not_running(pid, "--machine=x") == "exited with status 3"
    assert system.why_not_running(pid, "--machine=x") == "gone (not this process's child: its exit status is unknown)"


def test_a_signal_is_named() -> None:
    proc = subprocess.Popen(NAP)
    proc.send_signal(signal.SIGKILL)
    for _ in range(200):
        if not system.pid_alive(proc.pid):
            break
        time.sleep(0.05)
    assert system.why_not_running(proc.pid, "--machine=x") == "killed by SIGKILL"


def test_a_live_pid_under_another_command_line_says_so() -> None:
    proc = subprocess.Popen(NAP)
    try:
        # Popen returns once the child's exec has released the parent (vfork), which is before the kernel has set
        # up the new command line: read early, /proc shows it empty (a loaded CI run did).
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        for _ in range(100):
            if b"time.sleep(30)" in cmdline.read_bytes():
                break
            time.sleep(0.05)
        assert not system.pid_alive(proc.pid, "--machine=x")
        why = system.why_not_running(proc.pid, "--machine=x")
        assert why.startswith(f"PID {proc.pid} runs but its command line no longer names '--machine=x'"), why
        assert "time.sleep(30)" in why
    finally:
        proc.kill()
        proc.wait()
