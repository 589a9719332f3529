"""Per-node rows of `enclave status` from the hosts' raw answers and the plan (pure: no hosts, no printing).

A node is serving when its engine unit is active, its `current` weights are the plan's revision, and (for a
replica's head, the host that serves HTTP) /health answers 200 and the gateway keeps it in rotation. Anything
else is a problem, named per node; `serving` is true when no node and no gateway has one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from enclave.status.gpus import GpuCsvError, GpuReading, parse_gpu_csv
from enclave.status.history import History
from enclave.status.metrics import EngineLoad, engine_load, tokens_per_second


@dataclass
class NodeStatus:
    host: str
    replica: str | None  # None: the plan gives this node no engine
    role: str  # head (serves HTTP), worker (a later rank of a multi-node replica), spare
    engine: str  # the unit's ActiveState, "not installed", or "unreachable"
    revision: str | None  # where `current` points
    health: str | None  # "ok", "HTTP 503", an error; None where not asked (workers, spares)
    gpus: list[GpuReading] | None  # None: no GPU (or unreadable: see gpu_note)
    gpu_note: str = ""
    running: float | None = None
    waiting: float | None = None
    tokens_per_s: float | None = None
    rotation: str | None = None  # "in rotation" or "drained" (replica heads), else None
    problems: list[str] = field(default_factory=list)
    last_load: EngineLoad | None = None  # kept for the next --watch round

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("last_load")
        data["serving"] = not self.problems if self.replica else None
        return data


@dataclass
class GatewayStatus:
    host: str
    nginx: str
    drained: list[str]
    problems: list[str] = field(default_factory=list)
    # The TLS certificate clients are served (gateway.cert.describe), and what needs doing before it expires:
    # warnings, not problems, since the gateway still serves.
    certificate: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class ClusterStatus:
    repo: str
    revision: str
    served_model_name: str
    nodes: list[NodeStatus]
    gateways: list[GatewayStatus]
    # Each replica's recent load from Prometheus (enclave.status.history), or why there is none.
    history: History | None = None
    history_unavailable: str = ""

    @property
    def serving(self) -> bool:
        return not any(n.problems for n in self.nodes) and not any(g.problems for g in self.gateways)

    def as_dict(self) -> dict[str, Any]:
        """The documented shape of `enclave status --json` (docs/runbooks/verify.md)."""
        return {"serving": self.serving,
                "model": {"repo": self.repo, "revision": self.revision, "served_model_name": self.served_model_name},
                "nodes": {n.host: n.as_dict() for n in self.nodes},
                "gateways": {g.host: asdict(g) for g in self.gateways},
                "history": self.history.as_dict() if self.history else None,
                "history_unavailable": None if self.history else self.history_unavailable or "not read"}


def _replicas(plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """host -> (replica name, head|worker)."""
    found = {}
    for i, replica in enumerate(plan.get("replicas") or []):
        hosts = list(replica.get("hosts") or [])
        for rank, host in enumerate(hosts):
            found[host] = (str(replica.get("name") or f"replica-{i}"), "head" if rank == 0 else "worker")
    return found


def _engine_state(unit: dict[str, Any]) -> str:
    if unit.get("LoadState") == "not-found":
        return "not installed"
    return str(unit.get("ActiveState") or "unknown")


def _gpus(answer: dict[str, Any]) -> tuple[list[GpuReading] | None, str, str | None]:
    """(readings, note, problem)."""
    if "csv" in answer:
        try:
            return parse_gpu_csv(str(answer["csv"])), "", None
        except GpuCsvError as exc:
            return None, f"unreadable: {exc}", f"nvidia-smi: {exc}"
    if "absent" in answer:
        return None, f"no GPU ({answer['absent']})", None
    error = str(answer.get("error") or "no answer")
    return None, f"nvidia-smi failed: {error}", f"nvidia-smi failed: {error}"


def _health(answer: dict[str, Any]) -> str:
    if answer.get("status") == 200:
        return "ok"
    if "status" in answer:
        return f"HTTP {answer['status']}"
    return str(answer.get("error") or "no answer")


def _loads(pages: list[dict[str, Any]]) -> list[EngineLoad]:
    return [engine_load(str(p.get("text") or ""), float(p.get("at") or 0)) for p in pages if p.get("status") == 200]


def node_status(host: str, answer: dict[str, Any] | None, error: str | None, plan: dict[str, Any],
                drained: set[str], previous: EngineLoad | None = None) -> NodeStatus:
    replica, role = _replicas(plan).get(host, (None, "spare"))
    if answer is None:
        why = error or "no answer"
        node = NodeStatus(host, replica, role, "unreachable", None, None, None, gpu_note="-", problems=[why])
        return node
    engine = _engine_state(answer.get("engine") or {})
    gpus, gpu_note, gpu_problem = _gpus(answer.get("gpus") or {})
    node = NodeStatus(host, replica, role, engine, answer.get("current"), None, gpus, gpu_note)
    if gpu_problem:
        node.problems.append(gpu_problem)
    if replica is None:
        return node
    if engine != "active":
        result = (answer.get("engine") or {}).get("Result")
        node.problems.append(f"engine is {engine}" + (f" ({result})" if result and result != "success" else ""))
    wanted = str(plan.get("revision") or "")
    if node.revision != wanted:
        node.problems.append(f"current weights are {node.revision or 'missing'}, the plan says {wanted}")
    if role == "head":
        node.health = _health(answer.get("health") or {})
        if node.health != "ok":
            node.problems.append(f"/health: {node.health}")
        loads = _loads(answer.get("metrics") or [])
        if loads:
            node.running, node.waiting = loads[-1].running, loads[-1].waiting
            earlier = loads[-2] if len(loads) > 1 else previous
            node.tokens_per_s = tokens_per_second(earlier, loads[-1])
            node.last_load = loads[-1]
        node.rotation = "drained" if host in drained else "in rotation"
        if host in drained:
            node.problems.append("drained at the gateway (`enclave undrain` puts it back)")
    return node


def gateway_status(host: str, answer: dict[str, Any] | None, error: str | None) -> GatewayStatus:
    if answer is None:
        return GatewayStatus(host, "unreachable", [], [error or "no answer"])
    nginx = str(answer.get("nginx") or "unknown")
    gateway = GatewayStatus(host, nginx, sorted(str(h) for h in answer.get("drained") or []))
    if nginx != "active":
        gateway.problems.append(f"nginx is {nginx}")
    return gateway


def with_certificate(gateway: GatewayStatus, certificate: tuple[str, str | None] | None) -> GatewayStatus:
    """The gateway's row with its certificate's (description, warning or None), when it was read."""
    if certificate is not None:
        gateway.certificate, warning = certificate
        if warning:
            gateway.warnings.append(warning)
    return gateway


def cluster_status(plan: dict[str, Any], nodes: list[str], gateways: list[str], answers: dict[str, dict[str, Any]],
                   errors: dict[str, str], previous: dict[str, EngineLoad] | None = None,
                   certificates: dict[str, tuple[str, str | None]] | None = None) -> ClusterStatus:
    """`answers[host]` holds a node's probe JSON under "node" and a gateway's report under "gateway";
    `certificates[host]` the gateway's served certificate as (description, warning or None)."""
    gateway_rows = [with_certificate(gateway_status(h, answers.get(h, {}).get("gateway"), errors.get(h)),
                                     (certificates or {}).get(h)) for h in gateways]
    drained = {h for g in gateway_rows for h in g.drained}
    # a worker follows its head in and out of rotation; only heads are named in the gateway's file
    node_rows = [node_status(h, answers.get(h, {}).get("node"), errors.get(h), plan, drained,
                             (previous or {}).get(h)) for h in nodes]
    return ClusterStatus(str(plan.get("repo") or "?"), str(plan.get("revision") or "?"),
                         str(plan.get("served_model_name") or "?"), node_rows, gateway_rows)
