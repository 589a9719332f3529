"""`enclave update` / `enclave rollback`: move every node to another model revision batch by batch, without
dropping client requests (playbooks/update.yml, rollback.yml; docs/runbooks/day2.md).

update stages and verifies the revision on every node first; rollback goes back to the revision the nodes
activated before the current one, still on disk, so no byte moves. Both then drain, switch, restart, check and
undrain one batch at a time, and stop when a batch fails beyond --max-fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli.common import InventoryOpt, VerboseOpt, console, err, reports_errors, resolve_inventory
from enclave.cli.progress import run_with_progress
from enclave.cli.weights import collect_status
from enclave.errors import UsageError
from enclave.plan import planfile
from enclave.plan.decide import one_value
from enclave.plan.inventory import Inventory, validate
from enclave.plan.parallelism import REVISION_VAR
from enclave.runner import PlaybookRequest

_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SERIAL_RE = re.compile(r"([1-9][0-9]*)(%?)")

SerialOpt = Annotated[str, typer.Option("--serial", help="Nodes per batch: a number or a percentage (25%).")]
MaxFailOpt = Annotated[str, typer.Option(
    "--max-fail", help="Share of a batch that may fail before the update stops (e.g. 0%, 50%).")]
VaultOpt = Annotated[Path | None, typer.Option(help="File holding the vault password.")]


def parse_serial(value: str) -> int | str:
    match = _SERIAL_RE.fullmatch(value.strip())
    if not match or (match.group(2) and int(match.group(1)) > 100):
        raise UsageError(f"--serial {value!r}: give a number of nodes (1, 2, ...) or a percentage (1%-100%)")
    return f"{match.group(1)}%" if match.group(2) else int(match.group(1))


def parse_max_fail(value: str) -> int:
    text = value.strip().removesuffix("%")
    if not text.isdigit() or int(text) > 100:
        raise UsageError(f"--max-fail {value!r}: give a percentage from 0% to 100%")
    return int(text)


def multi_node_replicas(plan: dict[str, Any]) -> list[str]:
    return [f"{r.get('name', '?')} ({', '.join(r['hosts'])})" for r in plan.get("replicas") or []
            if len(r.get("hosts") or []) > 1]


def roll_request(inventory: Path, plan: dict[str, Any] | None, revision: str, *, playbook: str, serial: str = "1",
                 max_fail: str = "0%", verbosity: int = 0, vault_password_file: Path | None = None) -> PlaybookRequest:
    """The rolling run (pure: checks the arguments and the plan, runs nothing)."""
    if plan is None:
        raise UsageError(f"no plan for {inventory}: run `enclave deploy -i {inventory}` first (update moves a "
                         "deployed cluster)")
    if not _REVISION_RE.fullmatch(revision):
        raise UsageError(f"{revision!r} is not a revision name (a 40-hex commit for the hub)")
    spanning = multi_node_replicas(plan)
    if spanning:
        raise UsageError(f"replicas over several nodes ({'; '.join(spanning)}) must switch all their nodes at once; "
                         "rolling updates move single-node replicas only: use `enclave deploy` in a maintenance "
                         "window")
    extra: dict[str, Any] = {"update_revision": revision, "update_serial": parse_serial(serial),
                             "update_max_fail_percentage": parse_max_fail(max_fail)}
    return PlaybookRequest(playbook=playbook, inventory=inventory, extra_vars=extra, verbosity=verbosity,
                           vault_password_file=vault_password_file)


def rollback_target(states: dict[str, dict[str, Any]], nodes: list[str]) -> str:
    """The revision the nodes activated before their current one and still hold (from `nodetool status`).

    After an update that stopped halfway, the nodes it did not reach already run that revision: they stay, and
    only the nodes that moved go back.
    """
    current: dict[str, str | None] = {}
    previous: dict[str, str | None] = {}
    for node in nodes:
        state = states.get(node)
        if not state or state.get("error"):
            raise UsageError(f"{node}: cannot read its weights state ({(state or {}).get('error', 'no answer')})")
        on_disk = {r["revision"] for r in state.get("revisions") or []}
        current[node] = state.get("current")
        order = [r for r in state.get("activations") or [] if r != current[node] and r in on_disk]
        previous[node] = order[-1] if order else None
    earlier = {p for p in previous.values() if p}
    movers = [n for n in nodes if current[n] not in earlier]
    stuck = [n for n in movers if previous[n] is None]
    if stuck or not movers:
        raise UsageError(f"{', '.join(stuck or nodes)}: no earlier revision is kept on disk (weights_keep keeps the "
                         "last N activated): nothing to roll back to")
    targets = {str(previous[n]) for n in movers}
    stay = [n for n in nodes if n not in movers and current[n] not in targets]
    if len(targets) > 1 or stay:
        found = "; ".join(f"{n}: current {current[n]}, before it {previous[n]}" for n in nodes)
        raise UsageError(f"the nodes disagree on the previous revision ({found}): run `enclave update "
                         "--model-revision REV` with the one you want")
    return targets.pop()


def _inventory_revision(inv: Inventory) -> str | None:
    value = one_value(inv, inv.enclave_hosts(), REVISION_VAR)
    return str(value) if value else None


def _roll(path: Path, inv: Inventory, plan: dict[str, Any], request: PlaybookRequest, verb: str) -> None:
    revision = str(request.extra_vars["update_revision"])
    err.print(f"{verb}: {plan.get('repo')} {plan.get('revision')} -> {revision}, batches of "
              f"{request.extra_vars['update_serial']}", highlight=False, soft_wrap=True)
    result = run_with_progress(request, console, title=verb)
    if result.exit_code != 0:
        for failure in result.progress.failures:
            err.print(f"{failure.host}: {failure.message}", highlight=False, soft_wrap=True)
        err.print(f"{verb} stopped: a node that failed stays out of the gateway's rotation; nodes not reached keep "
                  f"serving their revision. `enclave status` shows which; docs/runbooks/day2.md says what to do.",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(result.exit_code)
    written, changed = planfile.write(path, {**plan, "revision": revision})
    if changed:
        console.print(f"plan updated: revision {revision} ({written})")
    if _inventory_revision(inv) != revision:
        err.print(f"[yellow]the inventory still sets {REVISION_VAR}: {_inventory_revision(inv)}[/]: set it to "
                  f"{revision}, or the next `enclave deploy` switches every node back at once", highlight=False,
                  soft_wrap=True)
    console.print(f"every node serves {revision}")


@reports_errors
def update(
    inventory: InventoryOpt = None,
    model_revision: Annotated[str | None, typer.Option(
        "--model-revision", help="The revision to move to. Default: the inventory's enclave_model_revision.")] = None,
    serial: SerialOpt = "1",
    max_fail: MaxFailOpt = "0%",
    verbose: VerboseOpt = 0,
    vault_password_file: VaultOpt = None,
) -> None:
    """Move every node to a model revision, batch by batch, without dropping client requests."""
    path = resolve_inventory(inventory)
    inv = validate(path)
    revision = model_revision or _inventory_revision(inv)
    if not revision:
        raise UsageError(f"no revision to move to: pass --model-revision or set {REVISION_VAR} in {path}")
    plan = planfile.read(path)
    request = roll_request(path, plan, revision, playbook="update.yml", serial=serial, max_fail=max_fail,
                           verbosity=verbose, vault_password_file=vault_password_file)
    _roll(path, inv, plan or {}, request, "update")


@reports_errors
def rollback(
    inventory: InventoryOpt = None,
    serial: SerialOpt = "1",
    max_fail: MaxFailOpt = "0%",
    verbose: VerboseOpt = 0,
    vault_password_file: VaultOpt = None,
) -> None:
    """Go back to the revision the nodes ran before, still on disk (no transfer), the same rolling way."""
    path = resolve_inventory(inventory)
    inv = validate(path)
    plan = planfile.read(path)
    nodes = inv.hosts("enclave_nodes")
    with err.status("reading the kept revisions on the nodes"):
        states = collect_status(path, limit=",".join(nodes))
    revision = rollback_target(states, nodes)
    request = roll_request(path, plan, revision, playbook="rollback.yml", serial=serial, max_fail=max_fail,
                           verbosity=verbose, vault_password_file=vault_password_file)
    _roll(path, inv, plan or {}, request, "rollback")
