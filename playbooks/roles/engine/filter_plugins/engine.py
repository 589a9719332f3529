"""Filters of the engine role: which replica a host serves, its `vllm serve` argument list, systemd quoting.

Kept in Python (standard library only, no enclave import: plain ansible-playbook must find them) because the
per-host argument lists are what the unit test parses with vLLM's own parser.
"""

from __future__ import annotations

import ipaddress
from typing import Any

# vLLM's multi-node rendezvous port (--master-port) and data-parallel RPC port, on the private network only.
DEFAULT_MASTER_PORT = 29501
DEFAULT_DP_RPC_PORT = 13345


def engine_replica(plan: dict[str, Any], host: str) -> dict[str, Any]:
    """The replica `host` belongs to, with its rank (position in the replica's host order); {} if none."""
    for replica in plan.get("replicas") or []:
        hosts = list(replica.get("hosts") or [])
        if host in hosts:
            return {**replica, "rank": hosts.index(host), "head": hosts[0], "nnodes": len(hosts)}
    return {}


def engine_private_interface(facts: dict[str, Any], network: str) -> dict[str, str]:
    """{'address', 'interface'} of the host's IPv4 address inside the private network; {} if it has none."""
    net = ipaddress.IPv4Network(network, strict=False)
    for name in facts.get("interfaces") or []:
        entry = facts.get(name.replace("-", "_")) or {}
        candidates = [entry.get("ipv4") or {}, *(entry.get("ipv4_secondaries") or [])]
        for ipv4 in candidates:
            address = ipv4.get("address")
            if address and ipaddress.IPv4Address(address) in net:
                return {"address": address, "interface": entry.get("device", name)}
    return {}


def engine_serve_args(replica: dict[str, Any], *, model_dir: str, served_model_name: str, address: str, port: int,
                      head_address: str, master_port: int = DEFAULT_MASTER_PORT,
                      dp_rpc_port: int = DEFAULT_DP_RPC_PORT) -> list[str]:
    """`vllm serve` arguments (after `vllm`) for one host of a replica.

    The plan's args are complete except what differs per host: the model path, the bind address and port, and
    the multi-node flags. Multi-node uses vLLM's own launcher (not Ray): the head (rank 0) serves the API, the
    others run `--headless`. Tensor/pipeline parallelism across nodes rendezvous with --nnodes/--node-rank/
    --master-addr; data parallelism across nodes splits the ranks with --data-parallel-size-local/-start-rank.
    """
    args = [str(a) for a in replica.get("args") or []]
    argv = ["serve", model_dir, *args]
    if "--served-model-name" not in args:
        argv += ["--served-model-name", served_model_name]
    rank, nnodes = int(replica.get("rank", 0)), int(replica.get("nnodes", 1))
    if rank == 0:
        argv += ["--host", address, "--port", str(port)]
    if nnodes > 1:
        data_parallel = int(replica.get("data_parallel", 1))
        if data_parallel > 1:
            if data_parallel % nnodes:
                raise ValueError(f"data_parallel {data_parallel} does not split evenly over {nnodes} nodes")
            local = data_parallel // nnodes
            argv += ["--data-parallel-size-local", str(local), "--data-parallel-start-rank", str(rank * local),
                     "--data-parallel-address", head_address, "--data-parallel-rpc-port", str(dp_rpc_port)]
        else:
            argv += ["--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", head_address,
                     "--master-port", str(master_port)]
        if rank > 0:
            argv.append("--headless")
    return argv


def systemd_quote(argv: list[str]) -> str:
    """One systemd command line: every word double-quoted, C escapes, % and $ doubled (no specifiers, no
    variable expansion): JSON arguments such as --speculative-config survive intact."""
    words = []
    for arg in argv:
        escaped = str(arg).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
        escaped = escaped.replace("\n", "\\n").replace("\t", "\\t")
        words.append(f'"{escaped}"')
    return " ".join(words)


def systemd_env_value(value: Any) -> str:
    """A value for an EnvironmentFile line, double-quoted with backslash escapes."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    if "\n" in text:
        raise ValueError("environment values cannot span lines")
    return f'"{text}"'


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"engine_replica": engine_replica, "engine_private_interface": engine_private_interface,
                "engine_serve_args": engine_serve_args, "systemd_quote": systemd_quote,
                "systemd_env_value": systemd_env_value}
