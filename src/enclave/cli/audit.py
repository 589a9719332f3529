"""`enclave audit`: the controller's record of every state-changing verb (who, when, what, the result)."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated

import typer
from rich.table import Table

from enclave import audit as trail
from enclave.cli.common import console, reports_errors
from enclave.errors import UsageError

_AGO = re.compile(r"([1-9][0-9]{0,5})([mhd])")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`30m`, `12h`, `7d` ago, or an ISO date/time (UTC unless it says otherwise)."""
    now = now or dt.datetime.now(dt.UTC)
    if ago := _AGO.fullmatch(text.strip()):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[ago.group(2)]
        return now - dt.timedelta(**{unit: int(ago.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text[:40]!r}: give 30m, 12h, 7d or an ISO date/time (2026-12-04T18:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


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
