"""`enclave logs`: what the last run (or a chosen one) did, and above all what failed, per host and task."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from enclave import paths
from enclave.cli.common import console, reports_errors
from enclave.cli.progress import host_table
from enclave.runner import artifacts
from enclave.runner.events import HostTally


@reports_errors
def logs(
    run: Annotated[str | None, typer.Argument(help="Run id (or its start); default the last run.")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List the kept runs.")] = False,
) -> None:
    """Show the last run's failures (host, task, message) and its per-host recap."""
    runs = paths.state_dir() / "runs"
    if list_runs:
        table = Table(show_edge=False)
        for column in ("run", "playbook", "status", "changed", "failed hosts"):
            table.add_column(column)
        for run_dir in artifacts.run_dirs(runs):
            try:
                summary = artifacts.read_summary(run_dir)
            except Exception:
                table.add_row(run_dir.name, "-", "unfinished", "-", "-")
                continue
            hosts = summary.get("hosts", {})
            table.add_row(run_dir.name, summary.get("playbook", "-"), summary.get("status", "-"),
                          str(sum(h.get("changed", 0) for h in hosts.values())),
                          ", ".join(sorted({f["host"] for f in summary.get("failures", [])})) or "-")
        console.print(table)
        return
    run_dir = artifacts.find_run(runs, run)
    summary = artifacts.read_summary(run_dir)
    console.print(f"run {run_dir.name}: {summary.get('playbook')} on {summary.get('inventory')} -> "
                  f"{summary.get('status')} in {summary.get('seconds')} s", highlight=False)
    console.print(host_table({h: HostTally(**t) for h, t in summary.get("hosts", {}).items()}))
    failures = summary.get("failures", [])
    if not failures:
        console.print("no failures", highlight=False)
        return
    table = Table(title="failures", title_justify="left", show_edge=False)
    for column in ("host", "task", "message"):
        table.add_column(column, overflow="fold")
    for failure in failures:
        kind = " (unreachable)" if failure.get("unreachable") else ""
        table.add_row(failure["host"] + kind, failure["task"], failure["message"])
    console.print(table)
    console.print(f"full output: {run_dir / 'artifacts' / 'run' / 'stdout'}", highlight=False)
