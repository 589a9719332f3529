"""`enclave usage`: requests and tokens per client in a window, from the gateways' access logs (reads only)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from enclave.cli.common import (
    AskVaultOpt,
    InventoryOpt,
    VaultFileOpt,
    console,
    err,
    open_inventory,
    reports_errors,
)
from enclave.errors import UsageError
from enclave.gateway import keys
from enclave.gateway.usage import read_usage
from enclave.timewindow import parse_since


@reports_errors
def usage(
    inventory: InventoryOpt = None,
    since: Annotated[str, typer.Option(help="The window's start: 30m, 12h, 7d ago or an ISO date/time.")] = "24h",
    client: Annotated[str | None, typer.Option(help="Only this client (its name in gateway_api_keys).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: the window and a row per client.")] = False,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Per client: requests, prompt, completion and total tokens vLLM reported through the gateway since --since."""
    start = parse_since(since)
    if client is not None:
        try:
            keys.check_name(client)  # the one rule for a client's name
        except UsageError as exc:
            raise UsageError(f"--client {client[:40]!r}: {exc}") from None
    path, _, _ = open_inventory(inventory, vault_password_file, ask_vault_pass)
    with err.status("reading the gateways' access logs"):
        rows = read_usage(path, start, client=client)
    if as_json:
        typer.echo(json.dumps({"since": start.isoformat(), "clients": [r.to_json() for r in rows]}, sort_keys=True))
        return
    table = Table(show_edge=False, title=f"usage since {start:%Y-%m-%d %H:%M} UTC", title_justify="left")
    for column in ("client", "requests", "prompt tokens", "completion tokens", "total tokens"):
        table.add_column(column, justify="left" if column == "client" else "right")
    for r in rows:
        table.add_row(r.client or "(no valid key)", f"{r.requests:,}", f"{r.prompt_tokens:,}",
                      f"{r.completion_tokens:,}", f"{r.total_tokens:,}")
    console.print(table)
    if not rows:
        console.print(f"no requests{' from ' + client if client else ''} since {start.isoformat()}", highlight=False)

