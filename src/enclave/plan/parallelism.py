"""The parallelism planner: which nodes form each engine replica and how a replica splits the model.

Pure over data: host facts and a model profile in, a plan out (or PlanRefused saying why and what would fit).
The rules, in docs/planning.md:

- One plan serves one hardware class: every engine node must have the same GPU model and count (or no GPU: cpu).
- A node contributes its GPUs in a power-of-two count (what tensor and expert parallelism divide by); a cpu node
  contributes one device.
- Automatic choice: if one node holds the model (its GPUs' total memory >= the profile's minimum), every node is
  its own replica and splits its devices the profile's way: `data-expert` (data parallel = devices, with expert
  parallel for MoE: the vLLM DeepSeek recipe) or `tensor` (tensor parallel = devices). Otherwise a replica spans
  the fewest nodes that hold it, tensor parallel within a node and pipeline parallel across nodes (vLLM's rule for
  multi-node serving); nodes left over run no engine.
- Inventory overrides (`enclave_parallelism`) fix tensor/pipeline/data sizes, expert parallel and the replica
  count; the memory rule still applies to what they describe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from enclave.errors import EnclaveError, UsageError
from enclave.plan.facts import HostFacts
from enclave.plan.profiles import ModelProfile
from enclave.revision import check_revision

PLAN_VERSION = 1
DEFAULT_PORT = 8000
OVERRIDE_VAR = "enclave_parallelism"
REVISION_VAR = "enclave_model_revision"
OPTIONS_VAR = "enclave_model_options"
OVERRIDE_KEYS = {"tensor": "tensor parallel size", "pipeline": "pipeline parallel size (one node per stage when "
                 "a stage does not fit beside the others)", "data": "data parallel size (within one node)",
                 "expert": "expert parallel on/off (MoE models)", "replicas": "run at most this many replicas"}

# GPUs known by PCI device id, for hosts that have no driver yet (nvidia-smi cannot say what they are). Memory as
# nvidia-smi reports it on the recorded machines (tests/unit/fixtures/nvidia-smi).
PCI_GPUS: dict[str, tuple[str, int]] = {
    "0x2335": ("NVIDIA H200", 143771),
    "0x2330": ("NVIDIA H100 80GB HBM3", 81559),
    "0x2901": ("NVIDIA B200", 183359),
}
# For "what would fit": 8-GPU nodes of the classes the shipped profiles support, memory per GPU in MiB.
REFERENCE_NODES: tuple[tuple[str, str, int], ...] = (
    ("h100", "NVIDIA H100 80GB HBM3", 81559), ("h200", "NVIDIA H200", 143771), ("b200", "NVIDIA B200", 183359))
# Order matters: GH200/GB200 contain H200/B200 as words only with a prefix, and \b keeps them apart.
_CLASSES = ((re.compile(r"\bGH200\b"), "gh200"), (re.compile(r"\bGB200\b"), "gb200"),
            (re.compile(r"\bGB300\b"), "gb300"), (re.compile(r"\bH200\b"), "h200"),
            (re.compile(r"\bH100\b|\bH800\b"), "h100"), (re.compile(r"\bB200\b"), "b200"),
            (re.compile(r"\bB300\b"), "b300"), (re.compile(r"\bA100\b|\bA800\b"), "a100"))


class PlanRefused(EnclaveError):
    """No placement fits; the message says why and what would."""


@dataclass(frozen=True)
class Overrides:
    tensor: int | None = None
    pipeline: int | None = None
    data: int | None = None
    expert: bool | None = None
    replicas: int | None = None

    @property
    def sizes_given(self) -> bool:
        return any(v is not None for v in (self.tensor, self.pipeline, self.data))

    def describe(self) -> str:
        given = {k: getattr(self, k) for k in OVERRIDE_KEYS if getattr(self, k) is not None}
        return f"{OVERRIDE_VAR}: {{{', '.join(f'{k}: {v}' for k, v in given.items())}}}" if given else ""


@dataclass(frozen=True)
class NodeHardware:
    name: str
    hardware_class: str  # cpu, h100, h200, b200, ...
    model: str  # GPU model name, or "CPU"
    devices: int  # GPUs (cpu: 1)
    memory_mib: int  # per device (cpu: the host's RAM)
    source: str  # nvidia-smi | pci (no driver yet) | ram

    @property
    def usable(self) -> int:
        """Devices a replica uses on this node: the largest power of two (parallel sizes divide by it)."""
        return 1 << (self.devices.bit_length() - 1)

    def memory_gb(self, devices: int | None = None) -> float:
        return (self.usable if devices is None else devices) * self.memory_mib * 2**20 / 1e9

    def describe(self) -> str:
        if self.hardware_class == "cpu":
            return f"no GPU ({self.memory_mib / 1024:,.0f} GiB RAM)"
        return f"{self.devices} x {self.model} ({self.memory_mib * 2**20 / 1e9:,.0f} GB each)"


@dataclass(frozen=True)
class Replica:
    name: str
    hosts: tuple[str, ...]
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    expert_parallel: bool

    @property
    def devices(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel * self.data_parallel


@dataclass(frozen=True)
class ParallelismPlan:
    hardware_class: str
    node: NodeHardware  # the shape every node shares (the first node's facts)
    replicas: tuple[Replica, ...]
    idle: tuple[str, ...]  # engine nodes no replica uses
    reason: str  # one line: why this shape


def parse_overrides(value: Any, where: str = OVERRIDE_VAR) -> Overrides:
    """The inventory's `enclave_parallelism`, checked key by key."""
    if value is None or value == {}:
        return Overrides()
    if not isinstance(value, Mapping):
        raise UsageError(f"{where} must be a mapping such as {{pipeline: 2}}, got {type(value).__name__} {value!r}")
    problems = []
    found: dict[str, Any] = {}
    for key, item in value.items():
        if key not in OVERRIDE_KEYS:
            problems.append(f"{where}: unknown key {key!r} (known: "
                            + ", ".join(f"{k} = {v}" for k, v in OVERRIDE_KEYS.items()) + ")")
        elif key == "expert":
            if not isinstance(item, bool):
                problems.append(f"{where}: 'expert' must be true or false, got {item!r}")
            found[key] = item
        elif isinstance(item, bool) or not isinstance(item, int) or item < 1:
            problems.append(f"{where}: '{key}' must be a whole number >= 1, got {item!r}")
        else:
            found[key] = item
    for key in ("tensor", "data"):
        size = found.get(key)
        if isinstance(size, int) and size & (size - 1):
            problems.append(f"{where}: '{key}' must be a power of two (1, 2, 4, 8, ...), got {size}")
    if problems:
        raise UsageError("; ".join(problems))
    return Overrides(**found)


def resolve_revision(profile: ModelProfile, value: Any) -> str:
    """The pinned commit: the inventory's enclave_model_revision, else the profile's."""
    if value not in (None, ""):
        return check_revision(value, REVISION_VAR)
    if profile.revision:
        return profile.revision
    raise PlanRefused(f"no revision pinned for {profile.name} ({profile.repo}): set {REVISION_VAR} in the inventory "
                      "to the 40-hex commit you vetted (the hub's commit history of the repo)")


def gpu_class(name: str) -> str:
    for pattern, klass in _CLASSES:
        if pattern.search(name):
            return klass
    return re.sub(r"[^a-z0-9]+", "", name.lower().replace("nvidia", "")) or "unknown"


def node_hardware(facts: HostFacts, gpu_setting: str = "auto") -> NodeHardware:
    """What one node brings to a replica. Raises PlanRefused when its GPUs cannot be sized."""
    if gpu_setting == "none" or (facts.pci_gpus == 0 and not facts.gpus):
        # memory_mb is MemTotal / 1024 (MiB, as the facts table shows it)
        return NodeHardware(facts.name, "cpu", "CPU", 1, int(facts.memory_mb or 0), "ram")
    if facts.gpus:
        models = sorted({g.name for g in facts.gpus})
        if len(models) > 1:
            raise PlanRefused(f"{facts.name} mixes GPU models ({', '.join(models)}); a replica needs identical GPUs")
        memory = min((g.memory_mib for g in facts.gpus if g.memory_mib), default=0)
        if not memory:
            raise PlanRefused(f"{facts.name}: nvidia-smi does not show the GPUs' memory; cannot size a replica")
        return NodeHardware(facts.name, gpu_class(models[0]), models[0], len(facts.gpus), memory, "nvidia-smi")
    known = {PCI_GPUS.get(d) for d in facts.pci_devices}
    if len(known) == 1 and None not in known:
        (model, memory), = known
        return NodeHardware(facts.name, gpu_class(model), model, facts.pci_gpus, memory, "pci")
    devices = ", ".join(sorted(set(facts.pci_devices))) or "unknown"
    raise PlanRefused(f"{facts.name}: {facts.pci_gpus} NVIDIA GPU(s) on the PCI bus (device {devices}) and no "
                      "working nvidia-smi to say their memory; install the driver first (enclave deploy --tags "
                      "provision), then plan again")


def plan_parallelism(nodes: Sequence[NodeHardware], profile: ModelProfile,
                     overrides: Overrides = Overrides()) -> ParallelismPlan:
    if not nodes:
        raise PlanRefused("no hosts in enclave_nodes to run the engine")
    nodes = sorted(nodes, key=lambda n: n.name)
    shapes: dict[tuple[str, str, int, int], list[str]] = {}
    for n in nodes:
        shapes.setdefault((n.hardware_class, n.model, n.usable, n.memory_mib), []).append(n.name)
    if len(shapes) > 1:
        detail = "; ".join(f"{', '.join(hosts)}: {_shape(nodes, hosts[0])}" for hosts in shapes.values())
        fits = [f"{', '.join(h)} ({_fit_count(nodes, h, profile)})" for h in shapes.values()]
        raise PlanRefused(f"engine nodes differ ({detail}); one plan serves identical nodes: keep one kind in "
                          f"enclave_nodes. Alone they would fit: {'; '.join(fits)}")
    node = nodes[0]
    klass = node.hardware_class
    if klass not in profile.hardware:
        raise PlanRefused(f"{profile.name} has engine settings for {', '.join(profile.hardware_classes)}, not for "
                          f"{klass} ({node.describe()}); add a hardware entry in an operator profile "
                          "(<inventory dir>/profiles/) if you know it runs there")
    need = profile.min_gpu_memory_gb
    if overrides.sizes_given:
        tp, pp, dp, per_replica, reason = _explicit_shape(node, profile, overrides)
    else:
        tp, pp, dp, per_replica, reason = _automatic_shape(node, nodes, profile)
    memory = node.memory_gb(min(tp * pp * dp, node.usable) if per_replica == 1 else node.usable) * per_replica
    if memory < need:
        raise PlanRefused(_too_small(profile, node, nodes, f"a replica of {tp * pp * dp} device(s) "
                                    f"({overrides.describe() or 'automatic'}) holds {memory:,.0f} GB"))
    fit = len(nodes) // per_replica
    if fit == 0:
        raise PlanRefused(_too_small(profile, node, nodes, f"a replica needs {per_replica} node(s) like "
                                                           f"{node.name}; the inventory has {len(nodes)}"))
    count = fit
    if overrides.replicas is not None:
        if overrides.replicas > fit:
            raise PlanRefused(f"{OVERRIDE_VAR}.replicas is {overrides.replicas} but {len(nodes)} node(s) make only "
                              f"{fit} replica(s) of {per_replica} node(s)")
        count = overrides.replicas
    expert = overrides.expert if overrides.expert is not None else (profile.moe and dp > 1)
    if expert and not profile.moe:
        raise PlanRefused(f"{OVERRIDE_VAR}.expert: {profile.name} is not a mixture-of-experts model")
    names = [n.name for n in nodes]
    replicas = tuple(Replica(f"replica-{i + 1}", tuple(names[i * per_replica:(i + 1) * per_replica]), tp, pp, dp,
                             expert) for i in range(count))
    return ParallelismPlan(klass, node, replicas, tuple(names[count * per_replica:]), reason)


def _automatic_shape(node: NodeHardware, nodes: Sequence[NodeHardware],
                     profile: ModelProfile) -> tuple[int, int, int, int, str]:
    g = node.usable
    if node.memory_gb() >= profile.min_gpu_memory_gb:
        if profile.parallelism == "data-expert" and g > 1:
            return 1, 1, g, 1, (f"one node holds {profile.name}: data parallel {g}"
                                + (" with expert parallel" if profile.moe else "") + " per node (profile default)")
        return g, 1, 1, 1, f"one node holds {profile.name}: tensor parallel {g} per node"
    per_replica = max(1, math.ceil(profile.min_gpu_memory_gb / node.memory_gb()))
    return g, per_replica, 1, per_replica, (f"one node holds {node.memory_gb():,.0f} GB < "
                                            f"{profile.min_gpu_memory_gb:,.0f} GB: tensor parallel {g} within a "
                                            f"node, pipeline parallel {per_replica} across nodes")


def _explicit_shape(node: NodeHardware, profile: ModelProfile,
                    overrides: Overrides) -> tuple[int, int, int, int, str]:
    g = node.usable
    tp = overrides.tensor if overrides.tensor is not None else (1 if overrides.data is not None else g)
    pp = overrides.pipeline or 1
    dp = overrides.data or 1
    devices = tp * pp * dp
    reason = f"set by the inventory ({overrides.describe()})"
    if devices <= g:
        return tp, pp, dp, 1, reason
    if dp > 1:
        raise PlanRefused(f"{overrides.describe()} needs {devices} devices but a node has {g}: data parallel is "
                          "planned within one node (more nodes make more replicas instead)")
    if devices % g or (tp > g and tp % g):
        raise PlanRefused(f"{overrides.describe()} needs {devices} devices, which {g}-device nodes cannot split "
                          f"evenly")
    return tp, pp, dp, devices // g, reason


def _shape(nodes: Sequence[NodeHardware], name: str) -> str:
    return next(n.describe() for n in nodes if n.name == name)


def _fit_count(nodes: Sequence[NodeHardware], hosts: list[str], profile: ModelProfile) -> str:
    node = next(n for n in nodes if n.name == hosts[0])
    if node.hardware_class not in profile.hardware:
        return f"no {profile.name} settings for {node.hardware_class}"
    per = max(1, math.ceil(profile.min_gpu_memory_gb / node.memory_gb())) if node.memory_gb() else 0
    if not per or len(hosts) < per:
        return "too small"
    return f"{len(hosts) // per} replica(s) of {per} node(s)"


def _too_small(profile: ModelProfile, node: NodeHardware, nodes: Sequence[NodeHardware], what: str) -> str:
    need = profile.min_gpu_memory_gb
    lines = [f"{profile.name} needs {need:,.0f} GB of GPU memory per replica; {what} "
             f"({len(nodes)} node(s) of {node.describe()})"]
    options = []
    per_node = node.memory_gb()
    if per_node > 0:
        options.append(f"{math.ceil(need / per_node)} node(s) like {node.name}")
    for klass, model, mib in REFERENCE_NODES:
        if klass in profile.hardware and klass != node.hardware_class:
            ref = NodeHardware("", klass, model, 8, mib, "reference")
            options.append(f"{math.ceil(need / ref.memory_gb())} node(s) of 8 x {model} "
                           f"({ref.memory_gb():,.0f} GB each)")
    if options:
        lines.append("It would fit on " + ", or ".join(options))
    return ". ".join(lines)


def replica_args(profile: ModelProfile, hardware_class: str, replica: Replica,
                 options: Sequence[str] = ()) -> list[str]:
    """Every engine flag of a replica except those the engine role adds per host (model path, address, key and
    the multi-node flags). `options`: the profile's opt-in options the inventory chose (enclave_model_options)."""
    args = list(profile.args_for(hardware_class, options, single_host=len(replica.hosts) == 1))
    args += ["--served-model-name", profile.served_model_name,
             "--tensor-parallel-size", str(replica.tensor_parallel),
             "--pipeline-parallel-size", str(replica.pipeline_parallel),
             "--data-parallel-size", str(replica.data_parallel)]
    if replica.expert_parallel:
        args.append("--enable-expert-parallel")
    return args


def plan_document(profile: ModelProfile, revision: str, plan: ParallelismPlan,
                  port: int = DEFAULT_PORT, options: Sequence[str] = ()) -> dict[str, Any]:
    """The `enclave_plan` variable (the plan contract, version 1)."""
    return {
        "version": PLAN_VERSION,
        "model": profile.name,
        "repo": profile.repo,
        "revision": revision,
        "served_model_name": profile.served_model_name,
        "port": port,
        "readiness_timeout_s": profile.readiness_timeout_s,
        "hardware_class": plan.hardware_class,
        "env": profile.env_for(plan.hardware_class, options),
        "replicas": [{"name": r.name, "hosts": list(r.hosts), "tensor_parallel": r.tensor_parallel,
                      "pipeline_parallel": r.pipeline_parallel, "data_parallel": r.data_parallel,
                      "expert_parallel": r.expert_parallel,
                      "args": replica_args(profile, plan.hardware_class, r, options)}
                     for r in plan.replicas],
    }
