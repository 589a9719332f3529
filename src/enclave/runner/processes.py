"""Stopping a cancelled ansible-playbook completely.

ansible-runner cancels by killing ansible-playbook's process group, but Ansible's worker processes call
setsid() and live in groups of their own: they would go on running the task they hold (an apt install, a
restart) after the operator pressed Ctrl-C. The canceller remembers them while they are still our
descendants and stops them after runner has stopped their parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

_MARK = b"ansible-playbook"


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _is_ansible(pid: int) -> bool:
    try:
        return _MARK in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def ansible_descendants(root: int) -> set[int]:
    """PIDs below `root` whose command line is ansible-playbook's (the main process and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return {pid for pid in found if _is_ansible(pid)}


class Canceller:
    """ansible-runner's cancel callback: answers whether to cancel, and remembers what must stop."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.workers: set[int] = set()

    def __call__(self) -> bool:
        if not self.event.is_set():
            return False
        # Runner kills the process group right after this returns True; read the tree before that.
        self.workers |= ansible_descendants(os.getpid())
        return True

    def stop_leftovers(self, patience: float = 5.0) -> list[int]:
        """SIGTERM the remembered workers still running, SIGKILL those that outlast `patience`."""
        alive = [pid for pid in self.workers if _is_ansible(pid)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + patience
            while alive and time.monotonic() < deadline:
                time.sleep(0.1)
                alive = [pid for pid in alive if _is_ansible(pid)]
            if not alive:
                break
        return sorted(self.workers)
