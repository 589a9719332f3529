"""`enclave keys add|rotate|revoke|list|apply`: the gateway's client API keys, kept in the inventory's
group_vars/enclave_gateway/api_keys.yml (vault-encrypted when the run has a vault password), then written onto the
gateway with a graceful nginx reload (requests in flight finish). A new key is printed once, here, and nowhere else.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

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
    resolve_inventory,
    use_vault,
)
from enclave.cli.progress import run_with_progress
from enclave.gateway import keys
from enclave.runner import PlaybookRequest

app = typer.Typer(help="Client API keys at the gateway.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The client's name (what the access log and the limits name).")]
GraceOpt = Annotated[str, typer.Option(
    "--grace", help="How long the old key keeps working: 60s, 30m, 24h, 7d, or 0 for not at all.")]


def keys_request(inventory: Path, *, verbosity: int = 0, vault_password_file: Path | None = None) -> PlaybookRequest:
    """The run that writes the inventory's keys onto the gateway (no key on its command line or extra vars)."""
    return PlaybookRequest(playbook="keys.yml", inventory=inventory, verbosity=verbosity,
                           vault_password_file=vault_password_file)


def _change(title: str, inventory: Path | None, verbose: int, vault_password_file: Path | None, ask_vault_pass: bool,
            change: Callable[[keys.KeyRing, datetime], str | None]) -> str | None:
    """Validate, change the keys file, converge the gateway; the new key (if any) is returned, never logged."""
    path, _, vault = open_inventory(inventory, vault_password_file, ask_vault_pass)
    store = keys.KeyStore(path, vault)
    store.check_owned()
    ring = store.read()
    before = copy.deepcopy(ring)
    key = change(ring, datetime.now(UTC))
    if ring != before:  # a vaulted file rewritten unchanged would still differ (a new salt): left alone
        store.write(ring)
    result = run_with_progress(keys_request(path, verbosity=verbose, vault_password_file=vault), console,
                               title=title)
    if result.exit_code != 0:
        err.print(f"{store.path} is changed, but the gateway did not take it: fix the failure above, then "
            "`enclave keys apply` writes it", highlight=False)
    if key is not None:
        # The one place a key is shown: stdout, once; the operator hands it to the client now.
        console.print(f"new key for the client (shown only now): {key}", highlight=False, soft_wrap=True)
    if result.exit_code != 0:
        raise typer.Exit(result.exit_code)
    return key


def _for_client(verb: str, done: str, name: str, change: Callable[[keys.KeyRing, str, datetime], str | None],
                inventory: Path | None, verbose: int, vault_password_file: Path | None, ask_vault_pass: bool) -> None:
    """A verb that changes one client's keys with `change(ring, name, now)` (add, revoke): the name checked first."""
    keys.check_name(name)
    _change(f"keys {verb} {name}", inventory, verbose, vault_password_file, ask_vault_pass,
            lambda ring, now: change(ring, name, now))
    console.print(f"client {name} {done} at the gateway")


@app.command("add")
@reports_errors
@audited("keys add")
def add(name: NameArg, inventory: InventoryOpt = None, verbose: VerboseOpt = 0,
        vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Give a new client a key (printed once) and let the gateway take it."""
    _for_client("add", "added", name, keys.add, inventory, verbose, vault_password_file, ask_vault_pass)


@app.command("rotate")
@reports_errors
@audited("keys rotate")
def rotate(name: NameArg, grace: GraceOpt = keys.DEFAULT_GRACE, inventory: InventoryOpt = None,
           verbose: VerboseOpt = 0, vault_password_file: VaultFileOpt = None,
           ask_vault_pass: AskVaultOpt = False) -> None:
    """Give a client a new key (printed once); the old one keeps working for --grace, then the gateway refuses it."""
    keys.check_name(name)
    period = keys.parse_grace(grace)
    at: list[datetime] = []

    def change(ring: keys.KeyRing, now: datetime) -> str:
        at.append(now)
        return keys.rotate(ring, name, period, now)

    _change(f"keys rotate {name}", inventory, verbose, vault_password_file, ask_vault_pass, change)
    until = datetime.fromtimestamp(int((at[0] + period).timestamp()), UTC)  # as stored: whole seconds
    old = f"the old key works until {until:%Y-%m-%d %H:%M:%S} UTC" if period else "the old key no longer works"
    console.print(f"client {name} rotated: {old}")


@app.command("revoke")
@reports_errors
@audited("keys revoke")
def revoke(name: NameArg, inventory: InventoryOpt = None, verbose: VerboseOpt = 0,
           vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Remove a client and every key it had (old ones in their grace too); the gateway refuses them at once."""
    _for_client("revoke", "revoked", name, keys.revoke, inventory, verbose, vault_password_file, ask_vault_pass)


@app.command("apply")
@reports_errors
@audited("keys apply")
def apply(inventory: InventoryOpt = None, verbose: VerboseOpt = 0, vault_password_file: VaultFileOpt = None,
          ask_vault_pass: AskVaultOpt = False) -> None:
    """Write the inventory's keys onto the gateway as they are (after a failed run, or a restored file)."""
    _change("keys apply", inventory, verbose, vault_password_file, ask_vault_pass,
            lambda ring, now: keys.prune(ring, now))
    console.print("the gateway has the inventory's client keys")


@app.command("list")
@reports_errors
def list_keys(inventory: InventoryOpt = None, vault_password_file: VaultFileOpt = None,
              ask_vault_pass: AskVaultOpt = False) -> None:
    """The clients with their created and rotated dates and old keys' grace expiries (never a key)."""
    path = resolve_inventory(inventory)
    store = keys.KeyStore(path, use_vault(vault_password_file, ask_vault_pass))
    store.check_owned()
    now = datetime.now(UTC)
    rows = keys.listing(store.read(), now)
    if not rows:
        console.print(f"no client keys in {store.path}")
        return
    console.print(f"{'client':<24} {'created':<21} {'rotated':<21} old key valid until", highlight=False,
                  soft_wrap=True)
    for row in rows:
        until = ", ".join(f"{t:%Y-%m-%dT%H:%M:%SZ}" for t in row.retired_until) or "-"
        console.print(f"{row.name:<24} {row.created:<21} {row.rotated:<21} {until}", highlight=False,
                      soft_wrap=True)
