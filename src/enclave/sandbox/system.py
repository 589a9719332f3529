"""Running the host's tools, with errors that name the command and what it said."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from enclave.errors import SandboxError
from enclave.pids import pid_running

# Debian package that provides each tool the sandbox runs; named in the error so the fix is one command.
TOOL_PACKAGES = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
    "gpg": "gnupg",
    "apt-get": "apt",
    "apt-ftparchive": "apt-utils",
    "chronyd": "chrony",
}


def require_host() -> None:
    """The sandbox makes namespaces, bridges and containers: that takes Linux and root."""
    problems = []
    if platform.system() != "Linux":
        problems.append(f"the sandbox needs Linux (this is {platform.system()})")
    elif os.geteuid() != 0:
        problems.append("the sandbox needs root (it creates network namespaces, a bridge and containers); "
                        "run it with sudo")
    missing = sorted({pkg for tool, pkg in TOOL_PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        problems.append("missing host packages: " + " ".join(missing)
                        + f" (install with: apt-get install {' '.join(missing)})")
    if problems:
        raise SandboxError("; ".join(problems))


def run(cmd: Sequence[str | Path], *, check: bool = True, timeout: float = 600,
        input: str | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [str(c) for c in cmd]
    try:
        # No input means /dev/null, never the caller's stdin: ssh and nspawn leave a descriptor they were
        # given O_NONBLOCK, which Ansible's tools then refuse (enclave.runner.inventory).
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input,
                              env=env, cwd=cwd, check=False,
                              **({} if input is not None else {"stdin": subprocess.DEVNULL}))
    except FileNotFoundError as exc:
        raise SandboxError(f"{args[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        tail = " | ".join(said[-5:]) if said else "no output"
        raise SandboxError(f"`{' '.join(args)}` failed with exit {proc.returncode}: {tail}")
    return proc


def pid_alive(pid: int | None, expect_in_cmdline: str | None = None) -> bool:
    """True when `pid` runs and, if given, its command line contains `expect_in_cmdline`.

    The command line check keeps us from signalling an unrelated process that reused a recorded PID.
    """
    if not pid or not pid_running(pid):
        return False
    if expect_in_cmdline is None:
        return True
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return expect_in_cmdline in raw.replace(b"\0", b" ").decode(errors="replace")


def why_not_running(pid: int, expect_in_cmdline: str) -> str:
    """Why `pid_alive(pid, expect_in_cmdline)` said no, for an error message: how our child ended (reaping it), or
    that a live PID no longer names what it ran."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        got, status = -1, 0
    if got == pid:
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exited with status {os.waitstatus_to_exitcode(status)}"
    if pid_running(pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = "?"
        return f"PID {pid} runs but its command line no longer names {expect_in_cmdline!r}: {cmdline[:200]!r}"
    return "gone (not this process's child: its exit status is unknown)"


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until every pid has exited (reaping our own children); return those still alive."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left:
        for pid in list(left):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                left.remove(pid)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return left
