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
