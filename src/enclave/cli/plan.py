"""`enclave plan`: read every host's GPUs, drivers, memory, disk and network, say what deploy would meet, decide the
engine's parallelism and write the plan file (group_vars/all/enclave_plan.yml beside the inventory)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from enclave.cli.common import (
    AskVaultOpt,
    InventoryOpt,
    LimitOpt,
    VaultFileOpt,
    console,
    err,
    open_inventory,
    reports_errors,
)
from enclave.errors import UsageError
from enclave.plan import planfile
from enclave.plan.decide import Decision, decide, profile_for
from enclave.plan.facts import HostFacts, host_facts
from enclave.plan.gather import load_recorded
from enclave.plan.preflight import Finding, HostSettings, preflight
from enclave.runner.reads import gather

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "skip": "cyan", "info": "dim"}


def facts_table(facts: dict[str, HostFacts]) -> Table:
    table = Table(title="hosts", title_justify="left", show_edge=False)
    for column in ("host", "GPUs", "GPU memory", "driver", "CUDA", "NVSwitch / FM", "RAM", "free at weights",
                   "private NIC"):
        table.add_column(column)
    for name, f in sorted(facts.items()):
        gpus = f"{len(f.gpus)} x {f.gpu_model}" if f.gpus else (f"{f.pci_gpus} on PCI" if f.pci_gpus else "none")
        memory = f"{f.gpu_memory_mib:,} MiB" if f.gpu_memory_mib else "-"
        switch = f"{f.nvswitches} / {f.fabricmanager_version or '-'}" if f.nvswitches else "-"
        ram = f"{f.memory_mb / 1024:,.0f} GiB" if f.memory_mb else "-"
        disk = f"{f.disk_free_bytes / 1e9:,.0f} GB" if f.disk_free_bytes is not None else "-"
        nics = ", ".join(f"{n['name']} {a}" for n in f.interfaces for a in n.get("addresses", [])) or "-"
        table.add_row(name, gpus, memory, f.driver_version or "-", (f.smi.cuda_version if f.smi else None) or "-",
                      switch, ram, disk, nics)
    return table


def findings_table(findings: list[Finding]) -> Table:
    table = Table(title="preflight", title_justify="left", show_edge=False)
    for column in ("", "host", "check", "why"):
        table.add_column(column, overflow="fold")
    order = {"error": 0, "warning": 1, "skip": 2, "info": 3}
    for f in sorted(findings, key=lambda f: (order[f.severity], f.host or "", f.check)):
        table.add_row(Text(f.severity, _SEVERITY_STYLE[f.severity]), f.host or "(cluster)", f.check, f.message)
    return table


def plan_table(decision: Decision) -> Table:
    parallelism = decision.parallelism
    assert parallelism is not None
    table = Table(title=f"plan: {parallelism.reason}", title_justify="left", show_edge=False)
    for column in ("replica", "hosts (head first)", "devices", "tensor", "pipeline", "data", "expert"):
        table.add_column(column)
    node = parallelism.node
    for r in parallelism.replicas:
        devices = "CPU" if node.hardware_class == "cpu" else f"{r.devices} x {node.model}"
        table.add_row(r.name, ", ".join(r.hosts), devices, str(r.tensor_parallel), str(r.pipeline_parallel),
                      str(r.data_parallel), "yes" if r.expert_parallel else "no")
    for host in parallelism.idle:
        table.add_row(Text("(none)", "dim"), host, "-", "-", "-", "-", Text("no engine: left over", "dim"))
    return table


@reports_errors
def plan(
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    facts_file: Annotated[Path | None, typer.Option(
        "--facts", help="Use facts recorded earlier (JSON/YAML: host -> enclave_host facts) instead of reading "
                        "the hosts.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print facts, findings and the plan as JSON.")] = False,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Read every host's GPUs, drivers, memory, disk and network; show the preflight decisions and the plan.

    The plan (model, pinned revision, replicas and their parallelism) is written to group_vars/all/enclave_plan.yml
    beside the inventory, where deploy and plain ansible-playbook read it. Exit 0 when nothing refuses a deploy,
    1 when a finding is an error or no plan fits, 2 for bad usage, inventory or profile.
    """
    path, inv, _ = open_inventory(inventory, vault_password_file, ask_vault_pass, reachable=facts_file is None)
    if facts_file is not None:
        raw = load_recorded(facts_file)
    else:
        with err.status("reading host facts"):
            raw = gather(path, limit=limit)
    hosts = [h for h in inv.enclave_hosts() if h in raw or facts_file is None]
    missing = sorted(set(inv.enclave_hosts()) - set(raw))
    if facts_file is not None and missing:
        raise UsageError(f"--facts {facts_file}: no facts for {', '.join(missing)}")
    facts = {h: host_facts(h, raw[h]) for h in hosts if h in raw}
    settings = {h: HostSettings.from_vars(inv.hostvars.get(h, {}), tuple(g for g, members in inv.groups.items()
                                                                          if h in members)) for h in facts}
    profile = profile_for(inv)
    model = profile.name
    findings = preflight(facts, settings, profile)
    decision = decide(inv, facts, profile)
    document = decision.document
    written = None
    recorded = (planfile.read(path) or {}).get("revision")
    # An update records the revision the nodes moved to in the plan; re-planning from an inventory that still pins
    # another one would move every node back at once at the next deploy.
    moves_back = document is not None and recorded not in (None, document.get("revision"))
    if document is not None and limit is None:
        written = planfile.write(path, document)
    errors = [f for f in findings if f.severity == "error"] + decision.refusals
    if as_json:
        console.print_json(json.dumps({"model": model, "hosts": {h: _facts_json(f) for h, f in facts.items()},
                                       "findings": [asdict(f) for f in findings], "plan": document,
                                       "refusals": decision.refusals,
                                       "recorded_revision": recorded,
                                       "plan_file": str(written[0]) if written else None}))
    else:
        console.print(facts_table(facts))
        console.print(findings_table(findings))
        if decision.parallelism is not None:
            console.print(plan_table(decision))
        for refusal in decision.refusals:
            console.print(Text.assemble(("no plan", "bold red"), f": {refusal}"))
        if moves_back:
            console.print(f"[yellow]the plan recorded revision {recorded}[/] (where the last `enclave update` or "
                          f"rollback moved the nodes); the inventory pins {decision.revision}: the next deploy "
                          "switches every node to it at once. For a rolling move use `enclave update`; to stay, set "
                          f"enclave_model_revision: {recorded}", highlight=False, soft_wrap=True)
        if written:
            console.print(f"plan {'written to' if written[1] else 'unchanged in'} {written[0]}")
        elif document is not None:
            console.print("plan not written: --limit plans part of the cluster")
        revision = f" @ {decision.revision[:12]}" if decision.revision else ""
        verdict = (f"[bold red]refused[/]: {len(errors)} error(s)" if errors else "[green]ready[/] to deploy")
        console.print(f"model {profile.name} ({profile.repo}{revision}, {profile.size_gb:g} GB): {verdict}")
    raise typer.Exit(1 if errors else 0)


def _facts_json(f: HostFacts) -> dict:
    return {"gpus": [asdict(g) for g in f.gpus], "pci_gpus": f.pci_gpus, "nvswitches": f.nvswitches,
            "driver_version": f.driver_version, "cuda_version": f.smi.cuda_version if f.smi else None,
            "fabricmanager_version": f.fabricmanager_version, "memory_mb": f.memory_mb,
            "disk_free_bytes": f.disk_free_bytes, "interfaces": f.interfaces, "reboot_required": f.reboot_required}
