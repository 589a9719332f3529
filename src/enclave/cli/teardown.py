"""`enclave teardown`: remove what the kit installed from every enclave host, after a typed confirmation.

Destructive, so it warns first (what goes, on which hosts) and asks for the inventory's name or the word
`teardown` unless --yes is given. playbooks/teardown.yml does the work and is idempotent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli.common import InventoryOpt, VerboseOpt, console, err, reports_errors, resolve_inventory
from enclave.cli.progress import run_with_progress
from enclave.errors import UsageError
from enclave.plan.inventory import Inventory, validate
from enclave.runner import PlaybookRequest

CONFIRM_WORD = "teardown"
# Directory names that say nothing about which cluster an inventory describes.
_GENERIC_NAMES = {"inventory", "inventories", "hosts"}


def inventory_name(path: Path) -> str:
    """The name an operator types to confirm: the inventory directory's (inventory/prod/hosts.yml -> prod;
    a sandbox's .../sandbox/td/inventory/hosts.yml -> td)."""
    parts = [path.name if path.is_dir() else path.stem, *(p.name for p in path.parents)]
    return next((p for p in parts if p and p.lower() not in _GENERIC_NAMES), CONFIRM_WORD)


def teardown_warning(inv: Inventory, *, keep_weights: bool) -> list[str]:
    """What goes, per group of hosts (pure: the test reads it)."""
    def hosts(group: str) -> str:
        return ", ".join(inv.hosts(group)) or "none"

    models = "kept (with the keys that verify them)" if keep_weights else "DELETED"
    return [
        f"nodes ({hosts('enclave_nodes')}): enclave-engine.service, the vLLM venvs under /opt/enclave, "
        f"the weights tools; model revisions under /srv/enclave/models: {models}",
        f"gateway ({hosts('enclave_gateway')}): the kit's nginx configuration (/etc/nginx/enclave) and, where the "
        "kit wrote nginx.conf, nginx itself (purged): clients get no answer from then on",
        f"staging ({hosts('enclave_staging')}): enclave-weights-seed.service, the hub client; staged revisions: "
        f"{models}",
        f"every host ({hosts('all')}): enclave-firewall.service and the nftables table inet enclave "
        "(the host is no longer isolated), /etc/enclave (API keys, engine and gateway settings), /opt/enclave, "
        "/srv/enclave",
        "left in place: the enclave user and its home, package sources, time sync, kernel settings, NVIDIA stack",
    ]


def teardown_request(inventory: Path, *, keep_weights: bool, verbosity: int = 0,
                     vault_password_file: Path | None = None) -> PlaybookRequest:
    extra: dict[str, Any] = {"teardown_keep_weights": keep_weights}
    return PlaybookRequest(playbook="teardown.yml", inventory=inventory, extra_vars=extra, verbosity=verbosity,
                           vault_password_file=vault_password_file)


def confirmed(answer: str, name: str) -> bool:
    return answer.strip() in {name, CONFIRM_WORD}


@reports_errors
def teardown(
    inventory: InventoryOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (automation).")] = False,
    keep_weights: Annotated[bool, typer.Option(
        "--keep-weights", help="Keep the model revisions on disk, so a later deploy moves no weights.")] = False,
    verbose: VerboseOpt = 0,
    vault_password_file: Annotated[Path | None, typer.Option(help="File holding the vault password.")] = None,
) -> None:
    """Remove what enclave installed from every host (units, venvs, gateway, firewall, weights). Asks first."""
    path = resolve_inventory(inventory)
    inv = validate(path)
    name = inventory_name(path)
    err.print(f"[bold red]enclave teardown[/] of {path} removes:", highlight=False)
    for line in teardown_warning(inv, keep_weights=keep_weights):
        err.print(f"  - {line}", highlight=False, soft_wrap=True)
    if not yes:
        answer = typer.prompt(f"type the inventory's name ({name}) or '{CONFIRM_WORD}' to go on", default="",
                              show_default=False, err=True)
        if not confirmed(answer, name):
            raise UsageError(f"teardown not confirmed (got {answer.strip()!r}); nothing was changed")
    request = teardown_request(path, keep_weights=keep_weights, verbosity=verbose,
                               vault_password_file=vault_password_file)
    result = run_with_progress(request, console, title="teardown")
    if result.exit_code == 0:
        console.print("enclave is removed from every host" + (" (model revisions kept)" if keep_weights else ""))
    raise typer.Exit(result.exit_code)
