"""The parallelism planner on host facts built around nvidia-smi outputs recorded on real machines."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from enclave.errors import UsageError
from enclave.plan.facts import host_facts
from enclave.plan.parallelism import (
    NodeHardware,
    Overrides,
    PlanRefused,
    node_hardware,
    parse_overrides,
    plan_document,
    plan_parallelism,
    resolve_revision,
)
from enclave.plan.profiles import load_profile
from tests.unit.recorded_facts import SMI, h200_node, host

FLASH = load_profile("deepseek-v4-flash")
PRO = load_profile("deepseek-v4-pro")
TINY = load_profile("sandbox-tiny")
REV = "0123456789abcdef0123456789abcdef01234567"


def nodes(raw: dict[str, dict[str, Any]], gpu: str = "auto") -> list[NodeHardware]:
    return [node_hardware(host_facts(name, facts), gpu) for name, facts in raw.items()]


def h100_node(address: str) -> dict[str, Any]:
    return host(gpus=8, nvswitches=4, summary="h100x8-default-table-565.txt", module_version="565.57.01",
                address=address)


def four_h200(tmp_name: str = "h200x4-query.csv") -> dict[str, Any]:
    """A 4-GPU H200 host: the header and first four rows of the recorded 8xH200 CSV query."""
    raw = host(gpus=4, address="10.40.0.21/24")
    lines = (SMI / "h200x8-query-csv-570.txt").read_text().splitlines()[:5]
    raw["nvidia_smi"]["query"] = {"present": True, "rc": 0, "stdout": "\n".join(lines) + "\n", "stderr": ""}
    return raw


def test_one_8xh200_node_serves_flash_data_parallel_8_with_expert_parallel() -> None:
    plan = plan_parallelism(nodes({"gpu01": h200_node("10.40.0.11/24")}), FLASH)
    assert plan.hardware_class == "h200" and plan.idle == ()
    [replica] = plan.replicas
    assert replica.hosts == ("gpu01",)
    assert (replica.tensor_parallel, replica.pipeline_parallel, replica.data_parallel) == (1, 1, 8)
    assert replica.expert_parallel


def test_four_h200_serve_flash_dp4_ep_as_the_recipe_says() -> None:
    [node] = nodes({"gpu01": four_h200()})
    assert (node.devices, node.memory_mib, node.hardware_class) == (4, 143771, "h200")
    [replica] = plan_parallelism([node], FLASH).replicas
    assert (replica.tensor_parallel, replica.data_parallel, replica.expert_parallel) == (1, 4, True)
    args = plan_document(FLASH, REV, plan_parallelism([node], FLASH))["replicas"][0]["args"]
    assert args[args.index("--data-parallel-size") + 1] == "4" and "--enable-expert-parallel" in args


def test_lowest_latency_override_is_tensor_parallel_8() -> None:
    plan = plan_parallelism(nodes({"gpu01": h200_node("10.40.0.11/24")}), FLASH, parse_overrides({"tensor": 8}))
    [replica] = plan.replicas
    assert (replica.tensor_parallel, replica.data_parallel, replica.expert_parallel) == (8, 1, False)


def test_two_8xh100_nodes_make_one_pro_replica_across_both() -> None:
    plan = plan_parallelism(nodes({"gpu01": h100_node("10.40.0.11/24"), "gpu02": h100_node("10.40.0.12/24")}),
                            PRO)
    [replica] = plan.replicas
    assert plan.hardware_class == "h100" and replica.hosts == ("gpu01", "gpu02")
    assert (replica.tensor_parallel, replica.pipeline_parallel, replica.data_parallel) == (8, 2, 1)
    doc = plan_document(PRO, REV, plan)
    assert "--max-model-len" in doc["replicas"][0]["args"]  # the Hopper settings of the recipe


def test_pro_on_one_8xh100_node_is_refused_saying_what_would_fit() -> None:
    with pytest.raises(PlanRefused) as caught:
        plan_parallelism(nodes({"gpu01": h100_node("10.40.0.11/24")}), PRO)
    message = str(caught.value)
    assert "deepseek-v4-pro needs 960 GB" in message and "1 node(s) of 8 x NVIDIA H100 80GB HBM3" in message
    assert "2 node(s) like gpu01" in message and "1 node(s) of 8 x NVIDIA H200" in message


def test_pro_on_one_8xh200_node_fits_as_the_recipe_says() -> None:
    [replica] = plan_parallelism(nodes({"gpu01": h200_node("10.40.0.11/24")}), PRO).replicas
    assert (replica.data_parallel, replica.expert_parallel) == (8, True)


def test_a_cluster_too_small_for_flash() -> None:
    small = host(gpus=1, summary="a100-40gb-default-table-550.txt", module_version="550.144.03")
    # an operator's copy of the profile that allows A100s: the memory rule still refuses one 40 GB GPU
    profile = replace(FLASH, hardware={**FLASH.hardware, "a100": FLASH.hardware["h100"]})
    with pytest.raises(PlanRefused) as caught:
        plan_parallelism(nodes({"gpu01": small}), profile)
    message = str(caught.value)
    assert "needs 170 GB of GPU memory per replica" in message and "1 x NVIDIA A100-SXM4-40GB (43 GB each)" in message
    assert "It would fit on 4 node(s) like gpu01" in message and "1 node(s) of 8 x NVIDIA H200" in message


def test_a_gpu_the_profile_has_no_settings_for_is_refused() -> None:
    small = host(gpus=1, summary="a100-40gb-default-table-550.txt", module_version="550.144.03")
    with pytest.raises(PlanRefused, match=r"not for a100 .*A100-SXM4-40GB"):
        plan_parallelism(nodes({"gpu01": small}), FLASH)


def test_mixed_gpu_models_are_refused_naming_hosts_and_what_each_kind_fits() -> None:
    raw = {"gpu01": h200_node("10.40.0.11/24"), "gpu02": h100_node("10.40.0.12/24"),
           "gpu03": h100_node("10.40.0.13/24")}
    with pytest.raises(PlanRefused) as caught:
        plan_parallelism(nodes(raw), PRO)
    message = str(caught.value)
    assert "gpu01: 8 x NVIDIA H200" in message and "gpu02, gpu03: 8 x NVIDIA H100 80GB HBM3" in message
    assert "gpu01 (1 replica(s) of 1 node(s))" in message and "gpu02, gpu03 (1 replica(s) of 2 node(s))" in message


def test_hosts_without_a_driver_are_sized_from_their_pci_ids() -> None:
    fresh = host(gpus=8, nvswitches=4)  # device 0x2335 (H200), nvidia-smi not installed yet
    [node] = nodes({"gpu01": fresh})
    assert (node.model, node.devices, node.source) == ("NVIDIA H200", 8, "pci")
    unknown = host(gpus=2)
    unknown["pci"]["gpus"] = [{"slot": "0000:01:00.0", "device": "0x9999", "class": "0x0302"}] * 2
    with pytest.raises(PlanRefused, match=r"gpu01: 2 NVIDIA GPU\(s\) on the PCI bus \(device 0x9999\)"):
        nodes({"gpu01": unknown})


def test_sandbox_cpu_nodes_are_one_replica_each() -> None:
    cpu = nodes({"node1": host(address="10.9.0.11/24"), "node2": host(address="10.9.0.12/24")}, gpu="none")
    plan = plan_parallelism(cpu, TINY)
    assert plan.hardware_class == "cpu"
    assert [r.hosts for r in plan.replicas] == [("node1",), ("node2",)]
    assert all((r.tensor_parallel, r.pipeline_parallel, r.data_parallel) == (1, 1, 1) for r in plan.replicas)
    doc = plan_document(TINY, REV, plan)
    assert doc["env"] == {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    assert doc["readiness_timeout_s"] == 600
    assert doc["replicas"][0]["args"][:4] == ["--max-model-len", "256", "--gpu-memory-utilization", "0.2"]
    # One node per replica: eager, so an engine start compiles nothing (the profile's single_host_args).
    assert all("--enforce-eager" in r["args"] for r in doc["replicas"])


def test_sandbox_pipeline_override_makes_one_replica_of_two_nodes() -> None:
    cpu = nodes({"node1": host(address="10.9.0.11/24"), "node2": host(address="10.9.0.12/24"),
                 "node3": host(address="10.9.0.13/24")}, gpu="none")
    plan = plan_parallelism(cpu, TINY, parse_overrides({"pipeline": 2}))
    [replica] = plan.replicas
    assert replica.hosts == ("node1", "node2") and replica.pipeline_parallel == 2 and replica.tensor_parallel == 1
    assert plan.idle == ("node3",)
    args = plan_document(TINY, REV, plan)["replicas"][0]["args"]
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    for flag in ("--nnodes", "--node-rank", "--master-addr", "--headless", "--host", "--port"):
        assert flag not in args  # the engine role adds these per host
    assert "--enforce-eager" not in args  # pipeline parallel across CPU hosts fails eager: compiled mode stays


@pytest.mark.parametrize("overrides", [{}, {"replicas": 1}, {"pipeline": 2}, {"pipeline": 3}, {"tensor": 1}])
def test_sandbox_runs_eager_exactly_on_replicas_of_one_host(overrides: dict[str, int]) -> None:
    cpu = nodes({f"node{i}": host(address=f"10.9.0.1{i}/24") for i in (1, 2, 3)}, gpu="none")
    plan = plan_parallelism(cpu, TINY, parse_overrides(overrides))
    for replica in plan_document(TINY, REV, plan)["replicas"]:
        assert ("--enforce-eager" in replica["args"]) == (len(replica["hosts"]) == 1), replica


def test_replica_count_override_and_its_limit() -> None:
    cpu = nodes({"node1": host(), "node2": host()}, gpu="none")
    assert len(plan_parallelism(cpu, TINY, Overrides(replicas=1)).replicas) == 1
    with pytest.raises(PlanRefused, match="replicas is 3 but 2 node"):
        plan_parallelism(cpu, TINY, Overrides(replicas=3))


def test_expert_parallel_on_a_dense_model_is_refused() -> None:
    with pytest.raises(PlanRefused, match="not a mixture-of-experts"):
        plan_parallelism(nodes({"node1": host()}, gpu="none"), TINY, Overrides(expert=True))


def test_data_parallel_across_nodes_is_refused() -> None:
    with pytest.raises(PlanRefused, match="data parallel is planned within one node"):
        plan_parallelism(nodes({"gpu01": h200_node("10.40.0.11/24"), "gpu02": h200_node("10.40.0.12/24")}),
                         FLASH, Overrides(data=16))


@pytest.mark.parametrize(("value", "expected"), [
    ({"pipline": 2}, "unknown key 'pipline'"),
    ({"pipeline": 0}, "'pipeline' must be a whole number >= 1"),
    ({"pipeline": "2"}, "'pipeline' must be a whole number >= 1"),
    ({"tensor": 6}, "'tensor' must be a power of two"),
    ({"expert": "yes"}, "'expert' must be true or false"),
    ([2], "must be a mapping"),
])
def test_bad_overrides_are_named(value: Any, expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        parse_overrides(value)


def test_revision_from_inventory_or_refused() -> None:
    assert resolve_revision(FLASH, REV) == REV
    with pytest.raises(UsageError, match="40-hex"):
        resolve_revision(FLASH, "main")
    with pytest.raises(PlanRefused, match="set enclave_model_revision"):
        resolve_revision(FLASH, None)
