"""One playbook run through ansible-runner, reported event by event through a callback."""

from __future__ import annotations

import json
import os
import queue
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

from enclave import audit, paths
from enclave.ansible_env import ansible_env
from enclave.errors import RunError
from enclave.runner import artifacts
from enclave.runner.command import PlaybookRequest, playbook_args
from enclave.runner.events import RunProgress
from enclave.runner.processes import stop_run

EventCallback = Callable[[dict[str, Any], RunProgress], None]

__all__ = ["PlaybookRequest", "RunResult", "run_playbook"]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # ansible-runner's: successful, failed, canceled, timeout
    rc: int
    progress: RunProgress
    seconds: float

    @property
    def cancelled(self) -> bool:
        return self.status == "canceled"

    @property
    def exit_code(self) -> int:
        """0 every host ok; 1 a host failed or was unreachable; 130 cancelled by the operator."""
        if self.cancelled:
            return 130
        return 0 if self.status == "successful" and self.rc == 0 and self.progress.ok else 1


def run_playbook(request: PlaybookRequest, *, on_event: EventCallback | None = None,
                 cancel: threading.Event | None = None, runs_dir: Path | None = None,
                 keep: int = artifacts.DEFAULT_KEEP) -> RunResult:
    runs = runs_dir or paths.state_dir() / "runs"
    # A bare name is one of the kit's playbooks; an absolute path (benchmarks, operators' own) runs from its folder.
    playbook = Path(request.playbook) if Path(request.playbook).is_absolute() else (
        paths.playbooks_dir() / request.playbook)
    if not playbook.is_file():
        raise RunError(f"no playbook {playbook}")
    run_dir = artifacts.new_run_dir(runs, Path(request.playbook).stem)
    audit.note_run(run_dir.name)  # the audit record of the verb that started this run names it
    extra_file = _write_extra_vars(run_dir, request.extra_vars)
    progress = RunProgress()
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    cancel = cancel or threading.Event()
    started = time.monotonic()
    summary: dict[str, Any] = {
        "playbook": request.playbook, "inventory": str(request.inventory.resolve()), "check": request.check,
        "limit": request.limit, "tags": list(request.tags), "skip_tags": list(request.skip_tags),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def handle(event: dict[str, Any]) -> bool:
        events.put(event)
        return True  # False would drop the event from disk and leave runner.stats empty

    try:
        thread, runner = ansible_runner.run_async(
            private_data_dir=str(run_dir),
            project_dir=str(playbook.parent),
            playbook=playbook.name,
            inventory=str(request.inventory.resolve()),
            cmdline=shlex.join(playbook_args(request, extra_file)),
            envvars=ansible_env(request.inventory),
            ident="run",
            quiet=True,
            suppress_env_files=True,
            rotate_artifacts=0,
            event_handler=handle,
            cancel_callback=cancel.is_set,
        )
        scrubbed = False
        while thread.is_alive() or not events.empty():
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if not scrubbed:
                artifacts.scrub_command_record(run_dir)
                scrubbed = True
            progress.feed(event)
            if on_event is not None:
                on_event(event, progress)
        thread.join()
    except ansible_runner.exceptions.AnsibleRunnerException as exc:
        raise RunError(f"ansible-runner could not run {request.playbook}: {exc}") from exc
    finally:
        if cancel.is_set():
            stop_run(str(run_dir / "artifacts" / "run"))
        if extra_file is not None:
            extra_file.unlink(missing_ok=True)
        artifacts.scrub_command_record(run_dir)
    result = RunResult(run_dir, str(runner.status), int(runner.rc if runner.rc is not None else 1), progress,
                       time.monotonic() - started)
    summary.update(status=result.status, rc=result.rc, exit_code=result.exit_code,
                   seconds=round(result.seconds, 1), **progress.as_dict())
    artifacts.write_summary(run_dir, summary)
    artifacts.prune(runs, keep)
    return result


def _write_extra_vars(run_dir: Path, extra_vars: dict[str, Any] | Any) -> Path | None:
    if not extra_vars:
        return None
    target = run_dir / "extra-vars.json"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(extra_vars), handle)
    return target

