"""Folding ansible-runner's event stream into what an operator wants to see: where the run is, and per host
what was ok, changed, failed or unreachable, with the failing task's own message."""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

_MESSAGE_LIMIT = 800
# A long message keeps its first lines (what failed) and its last ones (why: a traceback or journal tail ends with
# the cause), each line at most this long; the middle goes.
_HEAD_LIMIT = 300
_LINE_LIMIT = 200


@dataclass
class HostTally:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    ignored: int = 0
    rescued: int = 0

    @property
    def bad(self) -> bool:
        return self.failed > 0 or self.unreachable > 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    play: str
    message: str
    unreachable: bool = False


@dataclass
class RunProgress:
    play: str | None = None
    task: str | None = None
    tasks_started: int = 0
    hosts: dict[str, HostTally] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    finished: bool = False
    # The failure the last fed event added, if any: what a display prints as it happens.
    new_failure: TaskFailure | None = None

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        before = len(self.failures)
        self._fold(kind, data)
        self.new_failure = self.failures[-1] if len(self.failures) > before else None

    def _fold(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "playbook_on_play_start":
            self.play = data.get("play") or data.get("name")
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.task = data.get("task") or data.get("name")
            self.tasks_started += 1
        elif kind == "runner_on_ok":
            tally = self._host(data)
            tally.ok += 1
            if (data.get("res") or {}).get("changed"):
                tally.changed += 1
        elif kind == "runner_on_skipped":
            self._host(data).skipped += 1
        elif kind == "runner_on_failed":
            tally = self._host(data)
            if data.get("ignore_errors"):
                tally.ignored += 1
            else:
                tally.failed += 1
                self.failures.append(self._failure(data, unreachable=False))
        elif kind == "runner_on_unreachable":
            self._host(data).unreachable += 1
            self.failures.append(self._failure(data, unreachable=True))
        elif kind == "playbook_on_stats":
            self._take_stats(data)
            self.finished = True

    def snapshot(self) -> RunProgress:
        """A copy safe to render from another thread while events keep coming."""
        return RunProgress(play=self.play, task=self.task, tasks_started=self.tasks_started,
                           hosts={h: replace(t) for h, t in self.hosts.items()}, finished=self.finished)

    def _host(self, data: dict[str, Any]) -> HostTally:
        name = str(data.get("host") or data.get("remote_addr") or "?")
        return self.hosts.setdefault(name, HostTally())

    def _failure(self, data: dict[str, Any], *, unreachable: bool) -> TaskFailure:
        host = str(data.get("host", "?"))
        # Roles start their messages with the host so plain ansible-playbook output names it; the failure already
        # carries the host, and every report prefixes it.
        message = failure_message(data.get("res") or {}).removeprefix(f"{host}: ")
        return TaskFailure(host=host, task=str(data.get("task") or self.task or "?"),
                           play=str(data.get("play") or self.play or "?"), message=message, unreachable=unreachable)

    def _take_stats(self, data: dict[str, Any]) -> None:
        # Ansible's own recap is authoritative (it knows about rescued blocks); events only filled the gap.
        fields = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
                  "skipped": "skipped", "ignored": "ignored", "rescued": "rescued"}
        hosts = set(data.get("processed") or {})
        for source in fields:
            hosts.update(data.get(source) or {})
        for host in hosts:
            self.hosts[host] = HostTally(**{mine: int((data.get(theirs) or {}).get(host, 0))
                                            for theirs, mine in fields.items()})

    @property
    def ok(self) -> bool:
        return not any(t.bad for t in self.hosts.values())

    @property
    def changed_total(self) -> int:
        return sum(t.changed for t in self.hosts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"hosts": {h: asdict(t) for h, t in sorted(self.hosts.items())},
                "failures": [asdict(f) for f in self.failures], "tasks_started": self.tasks_started}


def diff_text(res: dict[str, Any]) -> str:
    """The file changes a result carries with --diff, as unified diff text ("" when there are none)."""
    diffs = res.get("diff") or []
    if isinstance(diffs, dict):
        diffs = [diffs]
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("diff"):
            diffs += item["diff"] if isinstance(item["diff"], list) else [item["diff"]]
    parts = []
    for diff in diffs:
        if not isinstance(diff, dict):
            continue
        if diff.get("prepared"):
            parts.append(str(diff["prepared"]))
        elif "before" in diff or "after" in diff:
            before, after = str(diff.get("before", "")), str(diff.get("after", ""))
            if before != after:
                parts.append("".join(difflib.unified_diff(
                    before.splitlines(keepends=True), after.splitlines(keepends=True),
                    fromfile=str(diff.get("before_header", "before")), tofile=str(diff.get("after_header", "after")))))
    return "\n".join(p.rstrip("\n") for p in parts if p.strip())


def failure_message(res: dict[str, Any]) -> str:
    """The one line an operator needs from a failed result: the module's message and the end of stderr."""
    if res.get("censored"):
        return str(res["censored"])
    parts: list[str] = []
    if res.get("msg"):
        parts.append(str(res["msg"]).strip())
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            label = item.get("item")
            label = label.get("path") or label.get("name") if isinstance(label, dict) else label
            parts.append(f"[{label}] {failure_message(item)}")
    for stream in ("stderr", "module_stderr"):
        text = str(res.get(stream) or "").strip()
        if text:
            parts.append(" | ".join(text.splitlines()[-3:]))
    if not parts and res.get("rc") not in (None, 0):
        parts.append(f"exit code {res['rc']}")
    message = "; ".join(dict.fromkeys(p for p in parts if p)) or "failed without a message"
    return message if len(message) <= _MESSAGE_LIMIT else _shorten(message)


def _shorten(message: str) -> str:
    """At most _MESSAGE_LIMIT characters: the head lines, "...", and as many tail lines as fit. Journal lines carry
    a program's own newlines escaped ("\\n"): they count as line breaks here."""
    lines = [line if len(line) <= _LINE_LIMIT else line[: _LINE_LIMIT - 3] + "..."
             for line in re.split(r"\n|\\n", message) if line.strip()]
    head: list[str] = []
    for line in lines:
        if sum(len(h) + 1 for h in head) + len(line) > _HEAD_LIMIT and head:
            break
        head.append(line)
    rest = lines[len(head):]
    tail: list[str] = []
    budget = _MESSAGE_LIMIT - sum(len(h) + 1 for h in head) - 4
    for line in reversed(rest):
        if len(line) + 1 > budget:
            break
        tail.insert(0, line)
        budget -= len(line) + 1
    shown = [*head, *(["..."] if len(tail) < len(rest) else []), *tail]
    return "\n".join(shown)[:_MESSAGE_LIMIT]
