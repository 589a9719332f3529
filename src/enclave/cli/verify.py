"""`enclave verify`: prove every host is as the kit left it, with the shipped testinfra checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enclave.checks.runner import run_checks
from enclave.cli.common import (
    AskVaultOpt,
    InventoryOpt,
    LimitOpt,
    VaultFileOpt,
    err,
    open_inventory,
    reports_errors,
)
from enclave.cli.results import limit_hosts, report_results


@reports_errors
def verify(
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    deep: Annotated[bool, typer.Option(help="Rehash the weights fully instead of trusting stamps.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Also write a JUnit XML report to this file.")] = None,
    as_json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Check every host against what the kit installed. Exit 0 all passed, 1 a check failed, 2 bad usage."""
    path, inv, _ = open_inventory(inventory, vault_password_file, ask_vault_pass)
    hosts = limit_hosts(inv, limit)
    with err.status("running host checks"):
        results, _ = run_checks(path, hosts=hosts, deep=deep, junit=junit.resolve() if junit else None)
    raise typer.Exit(report_results(results, as_json_output))
