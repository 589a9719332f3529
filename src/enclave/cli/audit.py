"""`enclave audit`: the controller's record of every state-changing verb (who, when, what, the result)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from enclave import audit as trail
from enclave.cli.common import console, reports_errors
from enclave.timewindow import parse_since


@reports_errors
def audit(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line, as stored.")] = False,
    since: Annotated[str | None, typer.Option(help="Only records since: 30m, 12h, 7d or an ISO date/time.")] = None,
    verb: Annotated[str | None, typer.Option(help="Only this verb (deploy, drain, weights sync, ...).")] = None,
) -> None:
    """Show who deployed, updated, drained or tore down what, when, and how it ended (secrets redacted)."""
    records = trail.read(since=parse_since(since) if since else None, verb=verb)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record, sort_keys=True))
        return
    table = Table(show_edge=False)
    for column in ("time (UTC)", "who", "verb", "inventory", "commit", "result", "runs"):
        table.add_column(column, overflow="fold")
    for r in records:
        who = f"{r.get('user')}@{r.get('host')}" + (f" (sudo {r['sudo_user']})" if r.get("sudo_user") else "")
        commit = (str(r.get("git_commit") or "")[:12] + ("+dirty" if r.get("git_dirty") else "")) or "-"
        table.add_row(str(r.get("time")), who, str(r.get("verb")), str(r.get("inventory") or "-"), commit,
                      f"{r.get('result')} ({r.get('exit_code')})", ", ".join(r.get("runs") or []) or "-")
    console.print(table)
    if not records:
        console.print(f"no records in {trail.paths.audit_log()}", highlight=False)
