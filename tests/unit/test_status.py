"""`enclave status` parsing and folding: recorded /metrics pages and nvidia-smi CSV, then per-node rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.status.cluster import cluster_status
from enclave.status.gpus import GpuCsvError, parse_gpu_csv
from enclave.status.metrics import EngineLoad, engine_load, sample_sums, tokens_per_second

FIXTURES = Path(__file__).parent / "fixtures"
METRICS = FIXTURES / "vllm-metrics"
SMI = FIXTURES / "nvidia-smi"
PLAN = {"repo": "enclave-sandbox/tiny-chat", "revision": "a" * 40, "served_model_name": "tiny", "port": 8000,
        "replicas": [{"name": "replica-1", "hosts": ["node1"]}, {"name": "replica-2", "hosts": ["node2", "node3"]}]}


def test_idle_page_reads_zero_load_and_ignores_the_created_gauges() -> None:
    load = engine_load((METRICS / "idle-single-engine-head40.txt").read_text(), at=10.0)
    assert load == EngineLoad(at=10.0, running=0.0, waiting=0.0, generated_tokens=0.0)
    # the counter's _created gauge is a Unix time (1.78e9): it must stay a separate series
    assert sample_sums((METRICS / "idle-single-engine-head40.txt").read_text())[
        "vllm:generation_tokens_created"] == pytest.approx(1.7769301736865187e9)


def test_page_after_ten_requests_reads_the_token_counter() -> None:
    load = engine_load((METRICS / "after-10-requests-grep-vllm.txt").read_text(), at=0.0)
    assert (load.running, load.waiting, load.generated_tokens) == (0.0, 0.0, 500.0)


def test_series_of_several_engine_cores_are_summed_and_junk_lines_skipped() -> None:
    page = (METRICS / "after-10-requests-grep-vllm.txt").read_text()
    second_core = page.replace('engine="0"', 'engine="1"').replace("} 500.0", "} 250.0")
    text = page + second_core + "not a sample line\nvllm:num_requests_running{engine=\"2\"} NaN\n"
    load = engine_load(text, at=0.0)
    assert load.generated_tokens == 750.0 and load.running == 0.0


def test_a_page_without_vllm_series_has_no_load() -> None:
    assert engine_load("# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 4.2\n", 0.0) == EngineLoad(
        0.0, None, None, None)


@pytest.mark.parametrize(("earlier", "later", "rate"), [
    (EngineLoad(100.0, 0, 0, 0.0), EngineLoad(102.0, 1, 0, 500.0), 250.0),
    (EngineLoad(100.0, 0, 0, 500.0), EngineLoad(100.0, 0, 0, 600.0), None),  # no time between them
    (EngineLoad(100.0, 0, 0, 500.0), EngineLoad(105.0, 0, 0, 20.0), None),  # counter reset: engine restarted
    (None, EngineLoad(105.0, 0, 0, 20.0), None),
    (EngineLoad(100.0, 0, 0, None), EngineLoad(105.0, 0, 0, 20.0), None),
])
def test_tokens_per_second_from_two_samples(earlier: EngineLoad | None, later: EngineLoad, rate: float | None) -> None:
    assert tokens_per_second(earlier, later) == rate


def test_recorded_a100_csv() -> None:
    gpus = parse_gpu_csv((SMI / "a100x8-query-status-csv.txt").read_text())
    assert [g.index for g in gpus] == list(range(8))
    assert {g.name for g in gpus} == {"NVIDIA A100-SXM4-80GB"}
    assert (gpus[0].memory_used_mib, gpus[0].memory_total_mib, gpus[0].utilization_pct) == (66147, 81920, 99)
    assert sum(g.memory_used_mib or 0 for g in gpus) == 340687
    assert gpus[5].utilization_pct == 0


def test_recorded_mixed_csv() -> None:
    gpus = parse_gpu_csv((SMI / "rtx4090-gtx1080ti-query-status-csv.txt").read_text())
    assert [(g.name, g.memory_used_mib, g.utilization_pct) for g in gpus] == [
        ("NVIDIA GeForce RTX 4090", 22995, 93), ("NVIDIA GeForce GTX 1080 Ti", 8, 0)]


def test_csv_nounits_and_na_fields_read_by_header() -> None:
    # another query's recorded output: no memory.total, [N/A] fan speed, no units
    [gpu] = parse_gpu_csv((SMI / "p100-query-csv-nounits.txt").read_text())
    assert (gpu.name, gpu.memory_used_mib, gpu.memory_total_mib, gpu.utilization_pct, gpu.index) == (
        "Tesla P100-PCIE-16GB", 0, None, 0, None)


@pytest.mark.parametrize("name", ["driver-not-loaded.txt", "nvml-mismatch-570.txt", "no-devices-found.txt"])
def test_nvidia_smi_errors_are_not_csv(name: str) -> None:
    with pytest.raises(GpuCsvError):
        parse_gpu_csv((SMI / name).read_text())


# -- folding answers into rows ----------------------------------------------------------------------
def node_answer(*, active: str = "active", current: str | None = "a" * 40, health: int | None = 200,
                pages: list[tuple[float, str]] | None = None, gpus: dict | None = None) -> dict:
    answer: dict = {"engine": {"LoadState": "loaded", "ActiveState": active, "Result": "success"},
                    "current": current, "gpus": gpus or {"absent": "nvidia-smi is not installed"}}
    if health is not None:
        answer["health"] = {"status": health}
        answer["metrics"] = [{"at": at, "status": 200, "text": text} for at, text in pages or []]
    return answer


def page(tokens: float, running: float = 1.0) -> str:
    return (f'vllm:num_requests_running{{engine="0",model_name="tiny"}} {running}\n'
            f'vllm:num_requests_waiting{{engine="0",model_name="tiny"}} 0.0\n'
            f'vllm:generation_tokens_total{{engine="0",model_name="tiny"}} {tokens}\n')


def answers(**nodes: dict) -> dict:
    found = {h: {"node": a} for h, a in nodes.items()}
    found["gw"] = {"gateway": {"nginx": "active", "drained": [], "replicas": ["node1", "node2"]}}
    return found


def test_all_serving() -> None:
    found = answers(node1=node_answer(pages=[(10.0, page(100)), (12.0, page(160))]),
                    node2=node_answer(pages=[(10.0, page(0, 0)), (12.0, page(0, 0))]),
                    node3=node_answer(health=None))
    cluster = cluster_status(PLAN, ["node1", "node2", "node3"], ["gw"], found, {})
    assert cluster.serving
    rows = {n.host: n for n in cluster.nodes}
    assert rows["node1"].tokens_per_s == 30.0 and rows["node1"].running == 1.0
    assert rows["node1"].gpu_note == "no GPU (nvidia-smi is not installed)" and rows["node1"].gpus is None
    assert (rows["node3"].role, rows["node3"].health, rows["node3"].rotation) == ("worker", None, None)
    data = json.loads(json.dumps(cluster.as_dict()))
    assert data["serving"] is True and data["nodes"]["node1"]["serving"] is True
    assert data["model"]["revision"] == "a" * 40 and data["gateways"]["gw"]["nginx"] == "active"


def test_each_fault_is_a_problem_on_its_node() -> None:
    found = answers(node1=node_answer(active="failed", health=None),
                    node2=node_answer(current="b" * 40, health=503),
                    node3=node_answer(health=None, gpus={"error": "NVIDIA-SMI has failed"}))
    found["node1"]["node"]["health"] = {"error": "Connection refused"}
    found["gw"]["gateway"]["drained"] = ["node2"]
    cluster = cluster_status(PLAN, ["node1", "node2", "node3", "node4"], ["gw"], found,
                             {"node4": "unreachable: ssh timed out"})
    problems = {n.host: n.problems for n in cluster.nodes}
    assert not cluster.serving
    assert problems["node1"] == ["engine is failed", "/health: Connection refused"]
    assert problems["node2"] == [f"current weights are {'b' * 40}, the plan says {'a' * 40}", "/health: HTTP 503",
                                 "drained at the gateway (`enclave undrain` puts it back)"]
    assert problems["node3"] == ["nvidia-smi failed: NVIDIA-SMI has failed"]
    assert problems["node4"] == ["unreachable: ssh timed out"]
    assert {n.host: n.rotation for n in cluster.nodes}["node2"] == "drained"


def test_a_spare_node_and_a_stopped_gateway() -> None:
    found = answers(node1=node_answer(pages=[(1.0, page(5))]), node2=node_answer(), node3=node_answer(health=None),
                    spare=node_answer(active="inactive", current=None, health=None))
    found["spare"]["node"]["engine"] = {"LoadState": "not-found", "ActiveState": "inactive"}
    found["gw"]["gateway"]["nginx"] = "failed"
    cluster = cluster_status(PLAN, ["node1", "node2", "node3", "spare"], ["gw"], found, {})
    spare = cluster.nodes[-1]
    assert (spare.engine, spare.role, spare.problems) == ("not installed", "spare", [])
    assert cluster.gateways[0].problems == ["nginx is failed"] and not cluster.serving
    # one sample only and no earlier round: load shows, tokens/s cannot be told
    assert (cluster.nodes[0].running, cluster.nodes[0].tokens_per_s) == (1.0, None)


def test_watch_rounds_take_tokens_per_second_from_the_previous_round() -> None:
    first = cluster_status(PLAN, ["node1"], ["gw"], answers(node1=node_answer(pages=[(100.0, page(1000))])), {})
    previous = {n.host: n.last_load for n in first.nodes if n.last_load}
    second = cluster_status(PLAN, ["node1"], ["gw"], answers(node1=node_answer(pages=[(105.0, page(1100))])), {},
                            previous)
    assert second.nodes[0].tokens_per_s == 20.0
