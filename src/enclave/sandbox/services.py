"""What the controller serves to nodes that have no route out: packages (HTTP) and time (NTP).

Both run as plain child processes of `enclave sandbox up`, detached into their own session, with their PIDs
recorded so `down` stops exactly them.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from enclave.errors import SandboxError
from enclave.pids import signal_pids
from enclave.sandbox import system

PACKAGE_PORT = 8808


@dataclass(frozen=True)
class Daemon:
    """A controller-side process: how to start it and how to recognise it by its command line."""

    name: str
    argv: tuple[str, ...]
    marker: str  # a string its command line must contain before we trust or signal a recorded PID
    log: Path

    def start(self) -> int:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True)
        return proc.pid

    def alive(self, pid: int | None) -> bool:
        return system.pid_alive(pid, self.marker)

    def stop(self, pid: int | None, timeout: float = 10) -> None:
        if not self.alive(pid):
            return
        assert pid is not None
        signal_pids([pid], signal.SIGTERM)
        if system.wait_gone([pid], timeout):
            signal_pids([pid], signal.SIGKILL)
            system.wait_gone([pid], 5)


def recorded(name: str, record: dict[str, object], logs: Path) -> Daemon:
    """A daemon as `up` recorded it: enough to check and stop it, not to start it."""
    marker = str(record.get("marker") or f"\0no marker recorded for {name}")
    return Daemon(name, (), marker, logs / f"{name}.log")


def package_server(repo: Path, address: ipaddress.IPv4Address, logs: Path) -> Daemon:
    argv = (sys.executable, "-m", "http.server", "--bind", str(address), "--directory", str(repo),
            str(PACKAGE_PORT))
    return Daemon("packages", argv, f"--bind {address} --directory {repo}", logs / "packages.log")


def ntp_server(state: Path, address: ipaddress.IPv4Address, network: ipaddress.IPv4Network,
               logs: Path) -> Daemon:
    # -x: serve time without ever touching this machine's clock.
    conf = state / "chrony.conf"
    conf.write_text(
        "# enclave sandbox: NTP for the nodes, from this machine's clock\n"
        f"bindaddress {address}\nport 123\ncmdport 0\nallow {network}\nlocal stratum 8\n"
        f"pidfile {state / 'chronyd.pid'}\ndriftfile {state / 'chrony.drift'}\n")
    argv = ("chronyd", "-d", "-x", "-u", "root", "-f", str(conf))
    return Daemon("ntp", argv, f"-f {conf}", logs / "ntp.log")


def wait_tcp(address: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def _log_tail(daemon: Daemon) -> str:
    lines = daemon.log.read_text(errors="replace").strip().splitlines()[-3:] if daemon.log.exists() else []
    return " | ".join(lines) or "no log output"


def require_started(daemon: Daemon, pid: int, settle: float = 0.5) -> None:
    """A daemon that dies at once (port taken, bad config) is reported, not recorded as running."""
    time.sleep(settle)
    if not daemon.alive(pid):
        raise SandboxError(f"the sandbox {daemon.name} server (pid {pid}) exited right after starting: "
                           f"{_log_tail(daemon)}")


def require_listening(daemon: Daemon, pid: int, address: str, port: int) -> None:
    if not wait_tcp(address, port, 10):
        raise SandboxError(f"the sandbox {daemon.name} server (pid {pid}) is not listening on "
                           f"{address}:{port}: {_log_tail(daemon)}")
