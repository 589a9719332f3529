"""`enclave teardown`: remove what the kit installed from every enclave host, after a typed confirmation.

Destructive, so it warns first (what goes, on which hosts) and asks for the inventory's name or the word
`teardown` unless --yes is given. playbooks/teardown.yml does the work and is idempotent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import jinja2
import typer
import yaml

from enclave import paths
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
from enclave.errors import UsageError
from enclave.plan.inventory import Inventory
from enclave.roles import host_name
from enclave.runner import PlaybookRequest

CONFIRM_WORD = "teardown"
# Directory names that say nothing about which cluster an inventory describes.
_GENERIC_NAMES = {"inventory", "inventories", "hosts"}
# The kit's directories teardown removes (playbooks/roles/teardown/vars/main.yml, teardown_dirs).
KIT_DIRS = ("enclave_root", "enclave_models_dir", "enclave_opt_dir", "enclave_etc_dir")


def inventory_name(path: Path) -> str:
    """The name an operator types to confirm: the inventory directory's (inventory/prod/hosts.yml -> prod;
    a sandbox's .../sandbox/td/inventory/hosts.yml -> td)."""
    parts = [path.name if path.is_dir() else path.stem, *(p.name for p in path.parents)]
    return next((p for p in parts if p and p.lower() not in _GENERIC_NAMES), CONFIRM_WORD)


def kit_dirs(inv: Inventory, defaults: dict[str, Any] | None = None) -> dict[str, dict[str, list[str]]]:
    """{variable: {path: hosts}} for the kit's directories as each host resolves them: the inventory's values over
    the enclave role's defaults, templates (`{{ enclave_root }}/models`) rendered as Ansible would."""
    if defaults is None:
        defaults = yaml.safe_load((paths.roles_dir() / "enclave" / "defaults" / "main.yml").read_text()) or {}
    found: dict[str, dict[str, list[str]]] = {name: {} for name in KIT_DIRS}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - paths, not HTML
    for host in inv.enclave_hosts():
        values = {**defaults, **inv.hostvars.get(host, {})}
        for name in KIT_DIRS:
            value = str(values.get(name, ""))
            for _ in range(5):  # a template may name another templated variable
                if "{{" not in value:
                    break
                try:
                    value = env.from_string(value).render(values)
                except jinja2.TemplateError:
                    break  # shown as written: Ansible resolves it on the host
            found[name].setdefault(value, []).append(host)
    return found


def _where(places: dict[str, list[str]]) -> str:
    if len(places) == 1:
        return next(iter(places))
    return "; ".join(f"{path} (on {', '.join(hosts)})" for path, hosts in places.items())


def teardown_warning(inv: Inventory, *, keep_weights: bool,
                     dirs: dict[str, dict[str, list[str]]] | None = None) -> list[str]:
    """What goes, per group of hosts, with the inventory's own paths (pure given `dirs`: the test reads it)."""
    def hosts(group: str) -> str:
        return ", ".join(inv.hosts(group)) or "none"

    where = {name: _where(places) for name, places in (dirs or kit_dirs(inv)).items()}
    models = "kept (with the keys that verify them)" if keep_weights else "DELETED"
    return [
        f"nodes ({hosts('enclave_nodes')}): {host_name('enclave_engine_unit')}, the vLLM venvs under "
        f"{where['enclave_opt_dir']}, the weights tools; model revisions under {where['enclave_models_dir']}: "
        f"{models}",
        f"gateway ({hosts('enclave_gateway')}): the kit's nginx configuration (/etc/nginx/enclave) and, where the "
        "kit wrote nginx.conf, nginx itself (purged): clients get no answer from then on",
        f"staging ({hosts('enclave_staging')}): enclave-weights-seed.service, the hub client; staged revisions: "
        f"{models}",
        f"every host ({hosts('all')}): enclave-firewall.service and the nftables table inet enclave "
        f"(the host is no longer isolated), {where['enclave_etc_dir']} (API keys, engine and gateway settings), "
        f"{where['enclave_opt_dir']}, {where['enclave_root']}",
        "left in place: any of those directories that existed before the kit's first deploy (with what is in it), "
        "the enclave user and its home, package sources, time sync, kernel settings, NVIDIA stack",
    ]


def teardown_request(inventory: Path, *, keep_weights: bool, verbosity: int = 0,
                     vault_password_file: Path | None = None) -> PlaybookRequest:
    extra: dict[str, Any] = {"teardown_keep_weights": keep_weights}
    return PlaybookRequest(playbook="teardown.yml", inventory=inventory, extra_vars=extra, verbosity=verbosity,
                           vault_password_file=vault_password_file)


def confirmed(answer: str, name: str) -> bool:
    return answer.strip() in {name, CONFIRM_WORD}


@reports_errors
@audited("teardown")
def teardown(
    inventory: InventoryOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (automation).")] = False,
    keep_weights: Annotated[bool, typer.Option(
        "--keep-weights", help="Keep the model revisions on disk, so a later deploy moves no weights.")] = False,
    verbose: VerboseOpt = 0,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Remove what enclave installed from every host (units, venvs, gateway, firewall, weights). Asks first."""
    path, inv, vault = open_inventory(inventory, vault_password_file, ask_vault_pass)
    name = inventory_name(path)
    err.print(f"[bold red]enclave teardown[/] of {path} removes:", highlight=False)
    for line in teardown_warning(inv, keep_weights=keep_weights):
        err.print(f"  - {line}", highlight=False, soft_wrap=True)
    if not yes:
        answer = typer.prompt(f"type the inventory's name ({name}) or '{CONFIRM_WORD}' to go on", default="",
                              show_default=False, err=True)
        if not confirmed(answer, name):
            raise UsageError(f"teardown not confirmed (got {answer.strip()!r}); nothing was changed")
    request = teardown_request(path, keep_weights=keep_weights, verbosity=verbose, vault_password_file=vault)
    result = run_with_progress(request, console, title="teardown")
    if result.exit_code == 0:
        console.print("enclave is removed from every host" + (" (model revisions kept)" if keep_weights else ""))
    raise typer.Exit(result.exit_code)
