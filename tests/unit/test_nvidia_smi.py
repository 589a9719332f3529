"""nvidia-smi parsing against outputs recorded on real machines (fixtures/nvidia-smi/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.plan.nvidia_smi import classify_failure, parse_query_csv, parse_summary, reading

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(("name", "driver", "cuda", "count", "model", "memory_mib"), [
    ("h200x8-default-table-570.txt", "570.133.20", "12.8", 8, "NVIDIA H200", 143771),
    ("h100x8-default-table-565.txt", "565.57.01", "12.7", 8, "NVIDIA H100 80GB HBM3", 81559),
    ("b200x8-default-table-570.txt", "570.133.20", "12.8", 8, "NVIDIA B200", 183359),
    ("gh200x4-default-table-590.txt", "590.48.01", "13.1", 4, "NVIDIA GH200 120GB", 97871),
    ("a100-40gb-default-table-550.txt", "550.144.03", "12.4", 1, "NVIDIA A100-SXM4-40GB", 40960),
    ("l40s-default-table-580-with-process.txt", "580.126.09", "13.0", 1, "NVIDIA L40S", 46068),
    ("rtx3090-default-table-535.txt", "535.161.07", "12.2", 1, "NVIDIA GeForce RTX 3090", 24576),
    # the pre-535 layout, with a name nvidia-smi truncated itself
    ("p100-default-table-470-legacy.txt", "470.82.01", "11.4", 1, "Tesla P100-PCIE...", 12198),
    # branch 610 renamed the header's fields to "KMD Version" and "CUDA UMD Version"
    ("rtx4090-default-table-610-kmd.txt", "610.62", "13.3", 1, "NVIDIA GeForce RTX 4090", 24564),
])
def test_summary_table(name: str, driver: str, cuda: str, count: int, model: str, memory_mib: int) -> None:
    result = parse_summary(fixture(name))
    assert result.failure is None
    assert (result.driver_version, result.cuda_version) == (driver, cuda)
    assert len(result.gpus) == count
    assert {g.name for g in result.gpus} == {model}
    assert {g.memory_mib for g in result.gpus} == {memory_mib}
    assert [g.index for g in result.gpus] == list(range(count))
    assert all(g.bus_id and g.bus_id.count(":") == 2 for g in result.gpus)


def test_summary_of_a_mig_enabled_gpu_reports_no_whole_gpu_memory() -> None:
    result = parse_summary(fixture("h100-pcie-mig-default-table-525.txt"))
    [gpu] = result.gpus
    assert gpu.name == "NVIDIA H100 PCIe"
    assert gpu.memory_mib is None  # the GPU row says N/A; MIG slices are not the GPU's memory


def test_query_csv_with_units_in_header_and_values() -> None:
    rows = parse_query_csv(fixture("h200x8-query-csv-570.txt"))
    assert len(rows) == 8
    assert rows[0]["memory.total"] == "143771 MiB"
    assert {r["driver_version"] for r in rows} == {"570.211.01"}


def test_query_csv_not_available_values() -> None:
    [row] = parse_query_csv(fixture("p100-query-csv-nounits.txt"))
    assert row["name"] == "Tesla P100-PCIE-16GB"
    assert row["fan.speed"] == "[N/A]"


def test_query_without_header_is_refused() -> None:
    with pytest.raises(ValueError, match="header"):
        parse_query_csv("0, NVIDIA H200, 143771 MiB\n")


def test_reading_combines_query_and_summary() -> None:
    ok = {"present": True, "rc": 0}
    result = reading({**ok, "stdout": fixture("h200x8-query-csv-570.txt")},
                     {**ok, "stdout": fixture("h200x8-default-table-570.txt")})
    assert result is not None and result.failure is None
    assert len(result.gpus) == 8
    assert {g.memory_mib for g in result.gpus} == {143771}
    assert result.driver_version == "570.211.01"  # the query's own, from the same run
    assert result.cuda_version == "12.8"           # only the summary reports it


def test_reading_without_nvidia_smi_is_none() -> None:
    assert reading({"present": False}, {"present": False}) is None


@pytest.mark.parametrize(("name", "code"), [
    ("nvml-mismatch-550.txt", "nvml-mismatch"),
    ("nvml-mismatch-570.txt", "nvml-mismatch"),
    ("driver-not-loaded.txt", "driver-unreachable"),
    ("no-devices-found.txt", "no-devices"),
])
def test_failures_are_classified_with_a_hint(name: str, code: str) -> None:
    failure = classify_failure(fixture(name))
    assert failure is not None and failure.code == code
    assert failure.hint
    result = reading({"present": True, "rc": 9, "stdout": fixture(name)}, {"present": True, "rc": 9, "stdout": ""})
    assert result is not None and result.failure is not None and result.failure.code == code
    assert not result.gpus


def test_unknown_failure_keeps_what_nvidia_smi_said() -> None:
    result = reading({"present": True, "rc": 15, "stdout": "", "stderr": "Unable to determine the device handle"},
                     {"present": True, "rc": 0, "stdout": ""})
    assert result is not None and result.failure is not None
    assert result.failure.code == "failed" and "device handle" in result.failure.message


def test_healthy_output_is_no_failure() -> None:
    assert classify_failure(fixture("h100x8-default-table-565.txt")) is None
