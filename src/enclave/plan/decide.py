"""From a validated inventory and its hosts' facts to the plan: the model profile, its pinned revision, the
parallelism and the plan document, or the reasons it cannot be made. Shared by `enclave plan` and `enclave deploy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enclave.errors import UsageError
from enclave.plan.facts import HostFacts
from enclave.plan.inventory import Inventory
from enclave.plan.monitoring import monitoring_host
from enclave.plan.parallelism import (
    OPTIONS_VAR,
    OVERRIDE_VAR,
    REVISION_VAR,
    ParallelismPlan,
    PlanRefused,
    node_hardware,
    parse_overrides,
    plan_document,
    plan_parallelism,
    resolve_revision,
)
from enclave.plan.profiles import ModelProfile, load_profile, search_dirs

MODEL_VAR = "enclave_model"
DEFAULT_MODEL = "deepseek-v4-flash"  # the enclave role's default


@dataclass
class Decision:
    profile: ModelProfile
    parallelism: ParallelismPlan | None = None
    revision: str | None = None
    options: tuple[str, ...] = ()  # the profile's opt-in options the inventory chose (enclave_model_options)
    refusals: list[str] = field(default_factory=list)
    monitoring_host: str | None = None  # enclave.plan.monitoring: the Prometheus/Alertmanager host

    @property
    def document(self) -> dict[str, Any] | None:
        if self.refusals or self.parallelism is None or self.revision is None:
            return None
        document = plan_document(self.profile, self.revision, self.parallelism, options=self.options)
        if self.monitoring_host is not None:
            document["monitoring"] = {"host": self.monitoring_host}
        return document


def one_value(inventory: Inventory, hosts: list[str], name: str, default: Any = None) -> Any:
    """A setting the whole cluster shares: the same value on every host that sets it."""
    values: dict[str, list[str]] = {}
    found = default
    for host in hosts:
        hostvars = inventory.hostvars.get(host, {})
        if name in hostvars:
            found = hostvars[name]
            values.setdefault(repr(found), []).append(host)
    if len(values) > 1:
        detail = "; ".join(f"{', '.join(h)}: {v}" for v, h in values.items())
        raise UsageError(f"{inventory.path}: {name} differs between hosts ({detail}); set it once for the cluster "
                         "(group_vars/all)")
    return found


def profile_for(inventory: Inventory) -> ModelProfile:
    model = one_value(inventory, inventory.enclave_hosts(), MODEL_VAR, DEFAULT_MODEL)
    if not isinstance(model, str):
        raise UsageError(f"{inventory.path}: {MODEL_VAR} must be a profile name, got {model!r}")
    return load_profile(model, search_dirs(inventory.path))


def decide(inventory: Inventory, facts: Mapping[str, HostFacts], profile: ModelProfile | None = None) -> Decision:
    """Plan the engine nodes. Bad settings raise UsageError; a plan that cannot be made is in `refusals`."""
    profile = profile or profile_for(inventory)
    nodes = [h for h in inventory.hosts("enclave_nodes") if h in facts]
    overrides = parse_overrides(one_value(inventory, nodes, OVERRIDE_VAR), OVERRIDE_VAR)
    decision = Decision(profile, options=profile.check_options(
        one_value(inventory, inventory.enclave_hosts(), OPTIONS_VAR), f"{inventory.path}: {OPTIONS_VAR}"),
        monitoring_host=monitoring_host(inventory.groups))
    try:
        decision.revision = resolve_revision(profile, one_value(inventory, inventory.enclave_hosts(), REVISION_VAR))
    except PlanRefused as exc:
        decision.refusals.append(str(exc))
    try:
        hardware = [node_hardware(facts[h], str(inventory.hostvars.get(h, {}).get("enclave_gpu", "auto")))
                    for h in nodes]
        decision.parallelism = plan_parallelism(hardware, profile, overrides)
    except PlanRefused as exc:
        decision.refusals.append(str(exc))
    return decision


def required_plan(inventory: Inventory, facts: Mapping[str, HostFacts]) -> dict[str, Any]:
    """The plan document, or PlanRefused with every reason (what deploy needs before it touches a host)."""
    decision = decide(inventory, facts)
    document = decision.document
    if document is None:
        raise PlanRefused("; ".join(decision.refusals) + " (nothing was changed)")
    return document
