"""`enclave update` / `enclave rollback`: move every node to another model revision and/or vLLM version batch by
batch, without dropping client requests (playbooks/update.yml, rollback.yml; docs/runbooks/day2.md).

update installs the vLLM build beside the running one and stages and verifies the revision on every node first;
rollback goes back to what the nodes ran before their last move (revision and venv still on disk), so no byte moves
and nothing is installed. Both then drain, switch, restart, check and undrain one batch at a time, and stop when a
batch fails beyond --max-fail.
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
    err,
    open_inventory,
    reports_errors,
)
from enclave.cli.progress import run_with_progress
from enclave.contract import BEFORE_DRAIN_PLAYS
from enclave.engine.build import VLLM_VERSION
from enclave.errors import UsageError
from enclave.plan import planfile
from enclave.plan.decide import one_value
from enclave.plan.inventory import Inventory
from enclave.plan.parallelism import REVISION_VAR
from enclave.revision import check_revision
from enclave.rollout import parse_max_fail, parse_serial, parse_vllm_version, roll_request, rollback_target
from enclave.runner import PlaybookRequest
from enclave.runner.reads import rollback_state

VERSION_VAR = "engine_vllm_version"
# Plays of update.yml / roll.yml that run before any node is drained: a failure there leaves every replica serving.

SerialOpt = Annotated[str, typer.Option("--serial", help="Nodes per batch: a number or a percentage (25%).")]
MaxFailOpt = Annotated[str, typer.Option(
    "--max-fail", help="Share of a batch that may fail before the update stops (e.g. 0%, 50%).")]


def _inventory_revision(inv: Inventory) -> str | None:
    value = one_value(inv, inv.enclave_hosts(), REVISION_VAR)
    return str(value) if value else None


def _inventory_vllm_version(inv: Inventory) -> str:
    """The release `enclave deploy` installs: the inventory's engine_vllm_version, else the engine role's default."""
    return str(one_value(inv, inv.enclave_hosts(), VERSION_VAR, VLLM_VERSION))


def _roll(path: Path, inv: Inventory, plan: dict[str, Any], request: PlaybookRequest, verb: str) -> None:
    revision = str(request.extra_vars["update_revision"])
    version = str(request.extra_vars.get("update_vllm_version") or "")
    err.print(f"{verb}: {plan.get('repo')} {plan.get('revision')} -> {revision}"
              f"{f', vLLM {version}' if version else ''}, batches of {request.extra_vars['update_serial']}",
              highlight=False, soft_wrap=True)
    result = run_with_progress(request, console, title=verb)
    if result.exit_code != 0:
        for failure in result.progress.failures:
            err.print(f"{failure.host}: {failure.message}", highlight=False, soft_wrap=True)
        if result.progress.failures and all(f.play in BEFORE_DRAIN_PLAYS for f in result.progress.failures):
            err.print(f"{verb} stopped before any node was drained: every node keeps serving as before.",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(result.exit_code)
        err.print(f"{verb} stopped: a node that failed stays out of the gateway's rotation; nodes not reached keep "
                  f"serving their revision. `enclave status` shows which; docs/runbooks/day2.md says what to do.",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(result.exit_code)
    # The rolling playbook's last play records the revision in the plan (so plain ansible-playbook does too).
    if (planfile.read(path) or {}).get("revision") != plan.get("revision"):
        console.print(f"plan updated: revision {revision} ({planfile.plan_path(path)})")
    if _inventory_revision(inv) != revision:
        err.print(f"[yellow]the inventory still sets {REVISION_VAR}: {_inventory_revision(inv)}[/]: set it to "
                  f"{revision}, or the next `enclave deploy` switches every node back at once", highlight=False,
                  soft_wrap=True)
    # The plan file holds no engine version (the inventory's engine_vllm_version decides): only a warning here.
    deployed_version = _inventory_vllm_version(inv) if version else ""
    if version and deployed_version != version:
        err.print(f"[yellow]the inventory's {VERSION_VAR} is {deployed_version}[/] (set or the kit's "
                  f"default): set it to {version}, or the next `enclave deploy` switches every node's vLLM at once",
                  highlight=False, soft_wrap=True)
    console.print(f"every node serves {revision}{f' on vLLM {version}' if version else ''}")


@reports_errors
@audited("update")
def update(
    inventory: InventoryOpt = None,
    model_revision: Annotated[str | None, typer.Option(
        "--model-revision", help="The revision to move to. Default: the inventory's enclave_model_revision.")] = None,
    vllm_version: Annotated[str | None, typer.Option(
        "--vllm-version", help="The vLLM release to move to (installed beside the running one first). Default: the "
        "inventory's engine_vllm_version, else the kit's.")] = None,
    serial: SerialOpt = "1",
    max_fail: MaxFailOpt = "0%",
    verbose: VerboseOpt = 0,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Move every node to a model revision and vLLM version, batch by batch, without dropping client requests."""
    if vllm_version is not None:
        parse_vllm_version(vllm_version)  # before the inventory is read: a typo costs nothing
    parse_serial(serial)
    parse_max_fail(max_fail)
    if model_revision is not None:
        check_revision(model_revision, "--model-revision")  # the inventory's rule, as early
    path, inv, vault = open_inventory(inventory, vault_password_file, ask_vault_pass)
    revision = model_revision or _inventory_revision(inv)
    if not revision:
        raise UsageError(f"no revision to move to: pass --model-revision or set {REVISION_VAR} in {path}")
    plan = planfile.read(path)
    request = roll_request(path, plan, revision, playbook="update.yml", serial=serial, max_fail=max_fail,
                           vllm_version=vllm_version or _inventory_vllm_version(inv), verbosity=verbose,
                           vault_password_file=vault)
    _roll(path, inv, plan or {}, request, "update")


@reports_errors
@audited("rollback")
def rollback(
    inventory: InventoryOpt = None,
    serial: SerialOpt = "1",
    max_fail: MaxFailOpt = "0%",
    verbose: VerboseOpt = 0,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Go back to the revision and vLLM version the nodes ran before, still on disk (no transfer, no install)."""
    parse_serial(serial)  # before the nodes are read
    parse_max_fail(max_fail)
    path, inv, vault = open_inventory(inventory, vault_password_file, ask_vault_pass)
    plan = planfile.read(path)
    nodes = inv.hosts("enclave_nodes")
    with err.status("reading the kept revisions and vLLM builds on the nodes"):
        states, builds = rollback_state(path, nodes)
    revision, version = rollback_target(states, nodes, builds)
    request = roll_request(path, plan, revision, playbook="rollback.yml", serial=serial, max_fail=max_fail,
                           vllm_version=version or None, verbosity=verbose, vault_password_file=vault)
    _roll(path, inv, plan or {}, request, "rollback")
