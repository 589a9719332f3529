"""Whether an SSH server answers at an address: shared by inventory validation and the sandbox's boot wait."""

from __future__ import annotations

import socket


def probe_ssh(address: str, port: int = 22, timeout: float = 5.0) -> str | None:
    """None when an SSH server answers; otherwise why not."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            banner = sock.recv(64)
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if banner.startswith(b"SSH-") else f"no SSH banner (got {banner[:20]!r})"


def answers_ssh(address: str, port: int = 22, *, tries: int = 3, timeout: float = 5.0) -> bool:
    """Whether an SSH server answers within `tries` probes of `timeout` seconds each. A host under load (a sandbox
    node starting an engine on a 2-core machine) can take seconds to send its banner, and taking that for a dead
    host restarts a node that serves; a refused connection is an answer, and final."""
    for _ in range(tries):
        why = probe_ssh(address, port, timeout)
        if why is None:
            return True
        if why != "timed out":
            return False
    return False
