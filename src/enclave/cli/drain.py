"""`enclave drain HOST` / `enclave undrain HOST`: take a replica out of the gateway's rotation, or put it back.

nginx reloads gracefully: requests and streams in flight on the replica finish; new ones go to the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.audit import audited
from enclave.cli.common import (
    AskVaultOpt,
    InventoryOpt,
    VaultFileOpt,
    VerboseOpt,
    console,
    open_inventory,
    reports_errors,
)
from enclave.cli.progress import run_with_progress
from enclave.errors import UsageError
from enclave.runner import PlaybookRequest

HostArg = Annotated[str, typer.Argument(help="Inventory name of the replica's head node.")]


def drain_request(host: str, state: str, inventory: Path, *, verbosity: int = 0,
                  vault_password_file: Path | None = None, nodes: list[str] | None = None) -> PlaybookRequest:
    """The run that changes the rotation (pure: testable without running anything). `nodes`: the inventory's
    enclave_nodes, one of which `host` must be."""
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise UsageError(f"{host!r} is not an inventory host name")
    if nodes is not None and host not in nodes:
        raise UsageError(f"{inventory}: no host {host!r} in enclave_nodes (nodes: {', '.join(nodes) or 'none'})")
    extra: dict[str, Any] = {"gateway_drain_host": host, "gateway_drain_state": state}
    return PlaybookRequest(playbook="drain.yml", inventory=inventory, extra_vars=extra, verbosity=verbosity,
                           vault_password_file=vault_password_file)


def _run(host: str, state: str, inventory: Path | None, verbose: int, vault_password_file: Path | None,
         ask_vault_pass: bool) -> None:
    path, inv, vault = open_inventory(inventory, vault_password_file, ask_vault_pass)
    request = drain_request(host, state, path, verbosity=verbose, vault_password_file=vault,
                            nodes=inv.hosts("enclave_nodes"))
    verb = "drain" if state == "drained" else "undrain"
    result = run_with_progress(request, console, title=f"{verb} {host}")
    if result.exit_code == 0:
        done = "drained: new requests go to the other replicas" if state == "drained" else "is back in rotation"
        console.print(f"{host} {done}")
    raise typer.Exit(result.exit_code)


@reports_errors
@audited("drain")
def drain(host: HostArg, inventory: InventoryOpt = None, verbose: VerboseOpt = 0,
          vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Take a replica out of the gateway's rotation; requests in flight on it finish."""
    _run(host, "drained", inventory, verbose, vault_password_file, ask_vault_pass)


@reports_errors
@audited("undrain")
def undrain(host: HostArg, inventory: InventoryOpt = None, verbose: VerboseOpt = 0,
            vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Put a drained replica back into the gateway's rotation."""
    _run(host, "active", inventory, verbose, vault_password_file, ask_vault_pass)
