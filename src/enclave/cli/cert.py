"""`enclave cert renew`: a new certificate on the gateway now, with a graceful nginx reload.

A kit-made certificate is reissued from the kit's CA on the controller (deploy also reissues one with less than
30 days left); with the operator's own certificate (gateway_tls_cert_file), the files as they are now are installed,
so renewing is: replace the files, run this. Either way the verb reads the certificate the gateway serves before
and after, as a client would, and fails when it still expires within `enclave_cert_warn_days`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import typer

from enclave.audit import audited
from enclave.cli.common import (
    AskVaultOpt,
    InventoryOpt,
    VaultFileOpt,
    VerboseOpt,
    console,
    err,
    open_inventory,
    reports_errors,
)
from enclave.cli.progress import run_with_progress
from enclave.gateway import cert
from enclave.gateway.client import GatewayTarget, gateway_target
from enclave.runner import PlaybookRequest

app = typer.Typer(help="The gateway's TLS certificate.", no_args_is_help=True)


def renew_request(inventory: Path, *, verbosity: int = 0, vault_password_file: Path | None = None) -> PlaybookRequest:
    """The run that reissues (kit CA) or reinstalls (operator's files) the certificate and reloads nginx."""
    return PlaybookRequest(playbook="cert-renew.yml", inventory=inventory, extra_vars={"gateway_cert_renew": True},
                           verbosity=verbosity, vault_password_file=vault_password_file)


# nginx reloads in the background: for a moment after `systemctl reload`, old workers still answer new handshakes
# with the old certificate (seen on the sandbox). Reading once would report the old serial as the new one.
RELOAD_SETTLE_S = 15.0


def settled(target: GatewayTarget, before: cert.ServedCert | None, *, wait_s: float = RELOAD_SETTLE_S,
            step_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> cert.ServedCert:
    """The served certificate once the reload shows: another serial than `before`, else what is served after
    `wait_s` (an operator's files that did not change keep their serial)."""
    deadline = clock() + wait_s
    while True:
        after = cert.served(target)
        if before is None or after.serial != before.serial or clock() >= deadline:
            return after
        sleep(step_s)


@app.command("renew")
@reports_errors
@audited("cert renew")
def renew(inventory: InventoryOpt = None, verbose: VerboseOpt = 0, vault_password_file: VaultFileOpt = None,
          ask_vault_pass: AskVaultOpt = False) -> None:
    """Reissue the gateway's certificate (or install the operator's replaced files) and reload nginx gracefully."""
    path, inv, vault = open_inventory(inventory, vault_password_file, ask_vault_pass)
    host, target = gateway_target(inv, path)
    warn = cert.warn_days(inv.hostvars.get(host))
    try:
        before: cert.ServedCert | None = cert.served(target)
    except cert.CertError as exc:  # an expired or missing certificate is what renewing is for
        before = None
        console.print(f"gateway {host}: before: {exc}")
    result = run_with_progress(renew_request(path, verbosity=verbose, vault_password_file=vault), console,
                               title=f"cert renew on {host}")
    if result.exit_code != 0:
        raise typer.Exit(result.exit_code)
    after = settled(target, before)
    now = datetime.now(UTC)
    moved = f"serial {before.serial} -> {after.serial}" if before else f"serial {after.serial}"
    if before is not None and before.serial == after.serial:
        moved = f"serial {after.serial}, unchanged (the operator's files are the ones already served)"
    console.print(f"gateway {host}: certificate {cert.describe(after, now)}, {moved}")
    problem = cert.problem(after, now, warn)
    if problem:
        err(f"gateway {host}: {problem.removesuffix(': `enclave cert renew`')}: replace the certificate files "
            "named by gateway_tls_cert_file/gateway_tls_key_file, then run this again")
        raise typer.Exit(1)
