"""Decisions of a rolling move (`enclave update` / `enclave rollback`), pure: the checked run request, and where a
rollback goes back to from what the nodes report. The verbs (enclave.cli.update) read, print and run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from enclave.engine.build import VLLM_VERSION
from enclave.errors import UsageError
from enclave.revision import check_revision
from enclave.runner import PlaybookRequest

_SERIAL_RE = re.compile(r"([1-9][0-9]*)(%?)")
_VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){1,3}")  # as `enclave bundle --vllm-version` and the update role accept


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
