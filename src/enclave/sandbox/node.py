"""One sandbox node: a systemd-nspawn container booting the base image through its own writable overlay.

A node's overlay (its "disk") survives `up` after a crash, like a rebooted server; `down` deletes it.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from enclave.errors import SandboxError
from enclave.pids import signal_pids
from enclave.sandbox import network, system
from enclave.sandbox.spec import SandboxHost
from enclave.ssh_probe import probe_ssh

_STOP_PATIENCE_S = 20


class BootExit(SandboxError):
    """systemd-nspawn ended (or stopped looking like this node's) before the node answered SSH."""


@dataclass(frozen=True)
class Node:
    sandbox: str
    host: SandboxHost
    home: Path  # state/nodes/<name>: upper/ (the overlay), console.log

    @property
    def upper(self) -> Path:
        return self.home / "upper"

    @property
    def host_key(self) -> Path:
        return self.upper / "etc/ssh/ssh_host_ed25519_key"

    @property
    def machine(self) -> str:
        return self.host.machine(self.sandbox)

    @property
    def netns(self) -> str:
        return self.host.netns(self.sandbox)

    def prepare(self, authorized_key: str, hosts_lines: list[str]) -> None:
        """Write what makes this node itself into its overlay: name, identity, host key, admin key."""
        etc = self.upper / "etc"
        (etc / "ssh").mkdir(parents=True, exist_ok=True)
        (etc / "hostname").write_text(f"{self.host.name}\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n" + "".join(
            f"{line}\n" for line in hosts_lines))
        machine_id = etc / "machine-id"
        if not machine_id.is_file() or not machine_id.read_text().strip():
            machine_id.write_text(secrets.token_hex(16) + "\n")
        if not self.host_key.is_file():
            system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.host.name}-host",
                        "-f", self.host_key])
        ssh_dir = self.upper / "root/.ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ssh_dir.chmod(0o700)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(authorized_key.strip() + "\n")
        keys.chmod(0o600)

    def known_hosts_line(self) -> str:
        key_type, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"{self.host.address} {key_type} {key}"

    def start(self, image_root: Path) -> int:
        argv = [
            "systemd-nspawn", "--boot", f"--directory={image_root}",
            f"--overlay={image_root}:{self.upper}:/",
            f"--machine={self.machine}",
            # This machine has no machined/system bus; registering or making a scope would fail.
            "--register=no", "--keep-unit",
            "--console=passive", "--link-journal=no", "--settings=no",
            f"--network-namespace-path={network.NETNS_DIR / self.netns}",
            # The node's own namespace is its network: the firewall role loads nftables there, as on a real host.
            "--capability=CAP_NET_ADMIN",
        ]
        log = (self.home / "console.log").open("ab")
        with log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True)
        return proc.pid

    def running(self, pid: int | None) -> bool:
        return system.pid_alive(pid, f"--machine={self.machine}")

    def wait_ssh(self, pid: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running(pid):
                why = system.why_not_running(pid, f"--machine={self.machine}")
                raise BootExit(f"node {self.host.name}: systemd-nspawn exited during boot ({why}); "
                               f"see {self.home / 'console.log'}: {self._console_tail()}")
            if probe_ssh(str(self.host.address), timeout=2) is None:
                return
            time.sleep(0.5)
        raise SandboxError(f"node {self.host.name} ({self.host.address}): no SSH after {timeout:.0f} s; "
                           f"console: {self._console_tail()}")

    def stop(self, pid: int | None) -> None:
        """Clean shutdown first; processes that keep the node alive (seen with Ray) are killed by PID."""
        if self.running(pid):
            assert pid is not None
            signal_pids([pid], signal.SIGTERM)
            if not system.wait_gone([pid], _STOP_PATIENCE_S):
                return
        # Only PIDs read from the namespace right now: an older list may name reused PIDs.
        survivors = [p for p in network.netns_pids(self.netns) if system.pid_alive(p)]
        signal_pids(survivors, signal.SIGKILL)
        if self.running(pid):
            assert pid is not None
            signal_pids([pid], signal.SIGKILL)
        left = system.wait_gone([*survivors, *([pid] if pid else [])], 10)
        if [p for p in left if system.pid_alive(p)]:
            raise SandboxError(f"node {self.host.name}: processes {left} survived SIGKILL")
        # nspawn removes this on a clean exit only.
        shutil.rmtree(Path("/run/systemd/nspawn/propagate") / self.machine, ignore_errors=True)

    def _console_tail(self) -> str:
        path = self.home / "console.log"
        lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return " | ".join(lines[-3:]) or "no output"
