"""`enclave update` / `enclave rollback`: move every node to another model revision and/or vLLM version batch by
batch, without dropping client requests (playbooks/update.yml, rollback.yml; docs/runbooks/day2.md).

update installs the vLLM build beside the running one and stages and verifies the revision on every node first;
rollback goes back to what the nodes ran before their last move (revision and venv still on disk), so no byte moves
and nothing is installed. Both then drain, switch, restart, check and undrain one batch at a time, and stop when a
batch fails beyond --max-fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli.common import InventoryOpt, VerboseOpt, console, err, reports_errors, resolve_inventory
from enclave.cli.progress import run_with_progress
from enclave.cli.weights import collect_status
from enclave.engine.build import VLLM_VERSION
from enclave.errors import UsageError
from enclave.plan import planfile
from enclave.plan.decide import one_value
from enclave.plan.inventory import Inventory, validate
from enclave.plan.parallelism import REVISION_VAR
from enclave.plan.profiles import check_revision
from enclave.runner import PlaybookRequest

_SERIAL_RE = re.compile(r"([1-9][0-9]*)(%?)")
_VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){1,3}")  # as `enclave bundle --vllm-version` and the update role accept
VERSION_VAR = "engine_vllm_version"
BUILD_TASK = "Report the engine build and the last move of this node"
# Plays of update.yml / roll.yml that run before any node is drained: a failure there leaves every replica serving.
BEFORE_DRAIN_PLAYS = ("Install the vLLM build on every node beside the running one", "Stage the revision on the "
                      "staging host", "Place and verify the revision on every node, current unchanged",
                      "Check every node holds the revision")

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


def parse_vllm_version(value: str) -> str:
    if not _VERSION_RE.fullmatch(value.strip()):
        raise UsageError(f"--vllm-version {value!r}: give a vLLM release such as {VLLM_VERSION}")
    return value.strip()


def multi_node_replicas(plan: dict[str, Any]) -> list[str]:
    return [f"{r.get('name', '?')} ({', '.join(r['hosts'])})" for r in plan.get("replicas") or []
            if len(r.get("hosts") or []) > 1]


def roll_request(inventory: Path, plan: dict[str, Any] | None, revision: str, *, playbook: str, serial: str = "1",
                 max_fail: str = "0%", vllm_version: str | None = None, verbosity: int = 0,
                 vault_password_file: Path | None = None) -> PlaybookRequest:
    """The rolling run (pure: checks the arguments and the plan, runs nothing). Without vllm_version each node keeps
    the inventory's engine_vllm_version, or the build it runs where the inventory sets none."""
    if plan is None:
        raise UsageError(f"no plan for {inventory}: run `enclave deploy -i {inventory}` first (update moves a "
                         "deployed cluster)")
    check_revision(revision, "the revision to move to")
    spanning = multi_node_replicas(plan)
    if spanning:
        raise UsageError(f"replicas over several nodes ({'; '.join(spanning)}) must switch all their nodes at once; "
                         "rolling updates move single-node replicas only: use `enclave deploy` in a maintenance "
                         "window")
    extra: dict[str, Any] = {"update_revision": revision, "update_serial": parse_serial(serial),
                             "update_max_fail_percentage": parse_max_fail(max_fail)}
    if vllm_version:
        extra["update_vllm_version"] = parse_vllm_version(vllm_version)
    return PlaybookRequest(playbook=playbook, inventory=inventory, extra_vars=extra, verbosity=verbosity,
                           vault_password_file=vault_password_file)


def rollback_target(states: dict[str, dict[str, Any]], nodes: list[str],
                    builds: dict[str, dict[str, Any]] | None = None) -> tuple[str, str]:
    """The revision and vLLM version the nodes ran before their last move, still on disk: (revision, version).

    `states` is each node's `nodetool status`, `builds` the update role's report (the build its engine runs and its
    record of the last move, /etc/enclave/update-previous.yml). A node with a record of the move that brought it
    where it is goes back to what it ran before it (only the version moved: the revision stays); a node without one
    goes back to the revision activated before its current one, on the build it runs. After an update that stopped
    halfway, the nodes it did not reach already run the target: they stay, and only the nodes that moved go back.
    The version is '' when no node runs an engine.
    """
    builds = builds or {}
    current: dict[str, tuple[str, str]] = {}
    previous: dict[str, tuple[str, str] | None] = {}
    for node in nodes:
        state = states.get(node)
        if not state or state.get("error"):
            raise UsageError(f"{node}: cannot read its weights state ({(state or {}).get('error', 'no answer')})")
        on_disk = {r["revision"] for r in state.get("revisions") or []}
        running = str((builds.get(node) or {}).get("running") or "")
        current[node] = (str(state.get("current")), running)
        record = (builds.get(node) or {}).get("record") or {}
        after = record.get("after") or {}
        if (str(after.get("revision")), str(after.get("vllm_version") or "")) == current[node]:
            before = record.get("before") or {}
            kept = (str(before.get("revision")), str(before.get("vllm_version") or running))
            previous[node] = kept if kept[0] in on_disk else None
        else:
            order = [r for r in state.get("activations") or [] if r != current[node][0] and r in on_disk]
            previous[node] = (order[-1], running) if order else None
    # Nodes without an engine run no build: only their revision has to fit.
    engines = [n for n in nodes if current[n][1]] or nodes
    earlier = {p for n in engines if (p := previous[n]) and p != current[n]}
    movers = [n for n in engines if current[n] not in earlier]
    stuck = [n for n in movers if previous[n] in (None, current[n])]
    if stuck or not earlier:
        raise UsageError(f"{', '.join(stuck or engines)}: no earlier revision or vLLM version is kept on disk "
                         "(weights_keep keeps the last N activated): nothing to roll back to")
    targets = {previous[n] for n in movers}
    stay = [n for n in engines if n not in movers and current[n] not in targets]
    target = next(iter(targets)) if len(targets) == 1 else None
    stay += [n for n in nodes if n not in engines and target
             and target[0] not in (current[n][0], (previous[n] or ("",))[0])]
    if target is None or stay:
        found = "; ".join(f"{n}: now {_state_text(current[n])}, before it {_state_text(previous[n])}" for n in nodes)
        raise UsageError(f"the nodes disagree on where to go back to ({found}): run `enclave update "
                         "--model-revision REV --vllm-version V` with the one you want")
    return target


def _state_text(state: tuple[str, str] | None) -> str:
    if state is None:
        return "nothing kept"
    return f"{state[0]}, vLLM {state[1]}" if state[1] else state[0]


def collect_rollback_state(path: Path, nodes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each node's weights status and engine build report (playbooks/rollback-state.yml, reads only)."""
    builds: dict[str, Any] = {}
    states = collect_status(path, ",".join(nodes), playbook="rollback-state.yml", what="what the nodes ran before",
                            reports=builds, report_task=BUILD_TASK)
    return states, builds


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
    written, changed = planfile.write(path, {**plan, "revision": revision})
    if changed:
        console.print(f"plan updated: revision {revision} ({written})")
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
    vault_password_file: VaultOpt = None,
) -> None:
    """Move every node to a model revision and vLLM version, batch by batch, without dropping client requests."""
    if vllm_version is not None:
        parse_vllm_version(vllm_version)  # before the inventory is read: a typo costs nothing
    parse_serial(serial)
    parse_max_fail(max_fail)
    if model_revision is not None:
        check_revision(model_revision, "--model-revision")  # the inventory's rule, as early
    path = resolve_inventory(inventory)
    inv = validate(path, vault_password_file=vault_password_file)
    revision = model_revision or _inventory_revision(inv)
    if not revision:
        raise UsageError(f"no revision to move to: pass --model-revision or set {REVISION_VAR} in {path}")
    plan = planfile.read(path)
    request = roll_request(path, plan, revision, playbook="update.yml", serial=serial, max_fail=max_fail,
                           vllm_version=vllm_version or _inventory_vllm_version(inv), verbosity=verbose,
                           vault_password_file=vault_password_file)
    _roll(path, inv, plan or {}, request, "update")


@reports_errors
def rollback(
    inventory: InventoryOpt = None,
    serial: SerialOpt = "1",
    max_fail: MaxFailOpt = "0%",
    verbose: VerboseOpt = 0,
    vault_password_file: VaultOpt = None,
) -> None:
    """Go back to the revision and vLLM version the nodes ran before, still on disk (no transfer, no install)."""
    parse_serial(serial)  # before the nodes are read
    parse_max_fail(max_fail)
    path = resolve_inventory(inventory)
    inv = validate(path, vault_password_file=vault_password_file)
    plan = planfile.read(path)
    nodes = inv.hosts("enclave_nodes")
    with err.status("reading the kept revisions and vLLM builds on the nodes"):
        states, builds = collect_rollback_state(path, nodes)
    revision, version = rollback_target(states, nodes, builds)
    request = roll_request(path, plan, revision, playbook="rollback.yml", serial=serial, max_fail=max_fail,
                           vllm_version=version or None, verbosity=verbose, vault_password_file=vault_password_file)
    _roll(path, inv, plan or {}, request, "rollback")
