"""Showing a playbook run as it happens: a live panel on a terminal, plain lines elsewhere (CI logs)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from enclave.runner import PlaybookRequest, RunProgress, RunResult, run_playbook
from enclave.runner.events import HostTally, diff_text

_COLUMNS = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
_STYLES = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold magenta",
           "skipped": "cyan"}


def host_table(hosts: dict[str, HostTally], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("host")
    for column in _COLUMNS:
        table.add_column(column, justify="right")
    for host, tally in sorted(hosts.items()):
        cells = []
        for column in _COLUMNS:
            value = getattr(tally, column)
            cells.append(Text(str(value), style=_STYLES.get(column, "") if value else "dim"))
        name_style = "bold red" if tally.bad else ("yellow" if tally.changed else "green")
        table.add_row(Text(host, style=name_style), *cells)
    return table


class _LivePanel:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = RunProgress()
        self.spinner = Spinner("dots")
        self.live = Live(console=console, refresh_per_second=8, transient=True, get_renderable=self.render)

    def render(self) -> Group:
        p = self.progress
        head = Text.assemble(("play ", "dim"), (p.play or "starting", "bold"))
        task = Text.assemble(("task ", "dim"), (f"{p.tasks_started}: ", "dim"), p.task or "-")
        self.spinner.text = task
        return Group(head, self.spinner, host_table(p.hosts))

    def on_event(self, event: dict[str, Any], progress: RunProgress) -> None:
        # Live renders from its own thread: give it a copy, never the object the driver keeps feeding.
        self.progress = progress.snapshot()
        _print_diff(self.console, event)
        failure = progress.new_failure
        if failure is not None:
            self.console.print(Text.assemble(("FAILED ", "bold red"), (failure.host, "bold"),
                                             f"  {failure.task}: ", (failure.message, "red")))


class _PlainLines:
    """One line per play, task and failure: readable in CI logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_event(self, event: dict[str, Any], progress: RunProgress) -> None:
        _print_diff(self.console, event)
        kind = event.get("event")
        if kind == "playbook_on_play_start":
            self.console.print(f"PLAY  {progress.play}", highlight=False)
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.console.print(f"TASK  {progress.task}", highlight=False)
        elif progress.new_failure is not None:
            f = progress.new_failure
            self.console.print(f"  FAILED {f.host}: {f.message}", highlight=False)
        elif kind == "runner_on_ok" and ((event.get("event_data") or {}).get("res") or {}).get("changed"):
            self.console.print(f"  changed {(event.get('event_data') or {}).get('host')}", highlight=False)


def _print_diff(console: Console, event: dict[str, Any]) -> None:
    """With --diff, what a task changed (or would change with --check), under the host's name."""
    if event.get("event") != "runner_on_ok":
        return
    data = event.get("event_data") or {}
    text = diff_text(data.get("res") or {})
    if text:
        console.print(Text.assemble(("diff ", "bold"), (str(data.get("host")), "bold"), f"  {data.get('task')}"))
        for line in text.splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
            console.print(Text(f"  {line}", style=style), soft_wrap=True)


def run_with_progress(request: PlaybookRequest, console: Console, *, title: str) -> RunResult:
    """Run with a live display; Ctrl-C cancels the run cleanly, a second Ctrl-C stops waiting for it."""
    cancel = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        console.print("[yellow]cancelling: stopping ansible-playbook (Ctrl-C again to stop waiting)[/]")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        if console.is_terminal:
            panel = _LivePanel(console)
            with panel.live:
                result = run_playbook(request, on_event=panel.on_event, cancel=cancel)
        else:
            result = run_playbook(request, on_event=_PlainLines(console).on_event, cancel=cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
    show_recap(result, console, title=title)
    return result


def show_recap(result: RunResult, console: Console, *, title: str) -> None:
    console.print(host_table(result.progress.hosts, title=f"{title}: recap"))
    run_id = result.run_dir.name
    if result.cancelled:
        console.print(f"[yellow]cancelled[/] after {result.seconds:.0f} s (run {run_id})")
    elif result.exit_code == 0:
        console.print(f"[green]ok[/]: {result.progress.changed_total} change(s) in {result.seconds:.0f} s "
                      f"(run {run_id})", highlight=False)
    else:
        failed = sorted({f.host for f in result.progress.failures}) or ["?"]
        console.print(f"[bold red]failed[/] on {', '.join(failed)} after {result.seconds:.0f} s "
                      f"(run {run_id}); `enclave logs` shows what failed", highlight=False)
