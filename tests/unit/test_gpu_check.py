"""The GPU smoke check (tests/gpu/gpu_check.py) where no GPU is needed: its skip line, its report on recorded
facts, and that the engine it would start gets the engine role's own argv and environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.checks.results import CheckResult
from enclave.checks.runner import run_local_checks
from enclave.plan.facts import host_facts
from enclave.plan.nvidia_smi import parse_summary
from tests.gpu import gpu_check
from tests.unit.engine_render import FILTERS, ROLE
from tests.unit.recorded_facts import h200_node, host

REPO = Path(__file__).resolve().parents[2]


def checks(*outcomes: tuple[str, str]) -> Any:
    def run(modules: tuple[str, ...], timeout: float) -> tuple[list[CheckResult], str]:
        assert modules == ("test_nvidia.py",)
        return [CheckResult("local", "nvidia", check, outcome, "why" if outcome != "passed" else "")
                for check, outcome in outcomes], ""
    return run


PASSING = checks(("driver_branch_pin", "failed"), ("driver_loaded", "passed"), ("no_pending_reboot", "passed"),
                 ("fabric_manager", "passed"))


def test_without_a_gpu_it_prints_one_line_and_exits_0() -> None:
    if gpu_check.has_gpu(gpu_check.read_facts()):
        pytest.skip("this machine has an NVIDIA GPU")
    proc = subprocess.run([sys.executable, "-m", "tests.gpu.gpu_check"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=120, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, gpu_check.SKIP_LINE + "\n", "")


def test_the_report_on_a_recorded_h200_node(tmp_path: Path) -> None:
    raw = h200_node("10.40.0.11/24", query="h200x8-query-csv-570.txt")
    status, lines = gpu_check.run(tmp_path, wheelhouse=None, read=lambda: raw, checks=PASSING)
    assert status == 0, lines
    # the CSV query (recorded on another H200 machine) is authoritative for the driver; the table adds CUDA
    assert "GPUs: 8 x NVIDIA H200, 143,771 MiB each; driver 570.211.01, CUDA 12.8; 4 NVSwitch(es)" in lines
    assert "plan (deepseek-v4-flash, this host alone): 1 replica: DP8 + EP" in lines
    assert "plan (gpu-check-1b, the check's model): 1 replica: TP8, hardware class h200" in lines
    assert any(ln.startswith("nvidia checks") and "driver_loaded passed" in ln for ln in lines)
    assert f"vLLM: skipped: {gpu_check.WHEELHOUSE_ENV} is not set" in "\n".join(lines)
    assert lines[-1] == "result: passed"
    # the recordings read back: facts as `enclave plan --facts` takes them, nvidia-smi's text as the fixtures
    recorded = json.loads((tmp_path / "facts.json").read_text())
    assert host_facts("gpu-check", recorded["gpu-check"]) == host_facts("gpu-check", raw)
    table = (tmp_path / "nvidia-smi-default-table.txt").read_text()
    assert parse_summary(table) == parse_summary(raw["nvidia_smi"]["summary"]["stdout"])


def test_a_failed_gpu_check_fails_the_run_but_the_deploy_only_pin_does_not(tmp_path: Path) -> None:
    raw = h200_node("10.40.0.11/24")
    status, lines = gpu_check.run(tmp_path, wheelhouse=None, read=lambda: raw,
                                  checks=checks(("driver_branch_pin", "failed"), ("driver_loaded", "failed")))
    assert status == 1 and lines[-1] == "result: FAILED: nvidia check driver_loaded: why"


def test_a_driver_mismatch_fails_with_the_parsers_hint(tmp_path: Path) -> None:
    raw = host(gpus=8, query="nvml-mismatch-570.txt", summary="nvml-mismatch-570.txt", rc=18)
    status, lines = gpu_check.run(tmp_path, wheelhouse=None, read=lambda: raw, checks=PASSING)
    assert status == 1
    assert "Driver/library version mismatch" in lines[-1] and "reboot the host" in lines[-1]


def test_a_wheelhouse_without_a_cuda_build_is_skipped_saying_why(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    (house / "bundle.json").write_text(json.dumps({"kind": "cpu", "installed_version": "0.32.0+cpu"}))
    status, lines = gpu_check.run(tmp_path / "out", wheelhouse=str(house), read=lambda: h200_node("10.40.0.11/24"),
                                  checks=PASSING)
    assert status == 0 and f"vLLM: skipped: {house} holds a cpu build, not a cuda one" in "\n".join(lines)


def test_the_engine_gets_the_engine_roles_argv_and_environment() -> None:
    report = gpu_check.Report()
    _, document = gpu_check.host_report(h200_node("10.40.0.11/24"), report)
    assert document is not None and document["hardware_class"] == "h200"
    argv, env = gpu_check.engine_launch(document, vllm=Path("/w/venv/bin/vllm"), model_dir=Path("/w/model"),
                                        home=Path("/w/home"), api_key="s3cret" * 8)
    replica = FILTERS["engine_replica"](document, gpu_check.HOST)
    # the role's argument filter, on the plan, with the loopback as this check's private address
    assert argv == ["/w/venv/bin/vllm", *FILTERS["engine_serve_args"](
        replica, model_dir="/w/model", served_model_name="gpu-check-1b", address="127.0.0.1", port=8000,
        head_address="127.0.0.1")]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "8"
    offline = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["engine_offline_env"]
    assert {k: env[k] for k in offline} == offline
    assert (env["VLLM_HOST_IP"], env["NCCL_SOCKET_IFNAME"], env["GLOO_SOCKET_IFNAME"]) == ("127.0.0.1", "lo", "lo")
    assert env["ENCLAVE_MODEL_REVISION"] == gpu_check.MODEL_REVISION and env["HOME"] == "/w/home"
    assert env["VLLM_API_KEY"] == "s3cret" * 8 and not any("s3cret" in a for a in argv)


def test_env_file_reads_what_the_role_writes() -> None:
    value = 'a "quoted" $HOME `x` back\\slash'
    line = f"KEY={FILTERS['systemd_env_value'](value)}"
    assert gpu_check.env_file(f"# comment\n{line}\n") == {"KEY": value}


def test_the_nvidia_checks_run_here_through_testinfras_local_backend() -> None:
    """The real run the GPU check makes (without a GPU here: the GPU checks skip, the pin is missing)."""
    if gpu_check.has_gpu(gpu_check.read_facts()):
        pytest.skip("this machine has an NVIDIA GPU")
    results, _ = run_local_checks(("test_nvidia.py",), timeout=120)
    outcomes = {r.check: (r.host, r.concern, r.outcome, r.message) for r in results}
    assert set(outcomes) == {"driver_branch_pin", "driver_loaded", "no_pending_reboot", "fabric_manager"}
    assert outcomes["driver_loaded"] == ("local", "nvidia", "skipped", "no NVIDIA device on the PCI bus")
    assert outcomes["driver_branch_pin"][2] == "failed"  # nothing deployed this machine
