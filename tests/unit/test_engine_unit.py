"""The engine's unit, environment and key files as the role renders them, checked by the real tools:
`systemd-analyze verify` for the unit, vLLM's own argument parser (from the wheelhouse's venv) for every
rendered argument list of every plan shape, so no unknown or misspelled flag ships."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave import paths
from enclave.engine.build import SANDBOX_BUILD
from enclave.engine.wheelhouse import Wheelhouse
from enclave.errors import EnclaveError
from tests.engine.argcheck import check_serve_args
from tests.engine.venv import ensure_venv
from tests.host_tools import require_tool
from tests.required import skip_or_fail
from tests.unit.engine_render import exec_start_argv, render, role_vars

CASES = sorted((Path(__file__).parent / "engine_cases").glob("*.yml"))


def named(stem: str) -> Path:
    return next(c for c in CASES if c.stem == stem)


def load_plan(case: Path) -> dict[str, Any]:
    return yaml.safe_load(case.read_text())


def hosts_of(plan: dict[str, Any]) -> list[str]:
    return [h for r in plan["replicas"] for h in r["hosts"]]


def rendered(case: Path) -> Iterator[tuple[str, dict[str, Any], str]]:
    plan = load_plan(case)
    hosts = hosts_of(plan)
    for host in hosts:
        variables = role_vars(plan, host, hosts, engine_wheelhouse_url="http://10.20.0.1/w/")
        yield host, variables, render("enclave-engine.service.j2", variables)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_unit_passes_systemd_analyze_verify(case: Path, tmp_path: Path) -> None:
    require_tool("systemd-analyze")
    for host, variables, unit in rendered(case):
        # verify checks that ExecStart's program exists and is executable: point the venv at a real one.
        venv = tmp_path / host / "venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "vllm").write_text("#!/bin/sh\n")
        (venv / "bin" / "vllm").chmod(0o755)
        unit = unit.replace(variables["engine_venv"] + "/bin/vllm", str(venv / "bin" / "vllm"))
        path = tmp_path / host / "enclave-engine.service"
        path.write_text(unit)
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                              check=False)
        problems = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                    if str(path.name) in ln or "enclave-engine" in ln]
        assert proc.returncode == 0 and not problems, f"{case.stem} {host}:\n{proc.stdout}{proc.stderr}"


def test_the_stop_timeout_is_the_roles_setting() -> None:
    plan = load_plan(CASES[0])
    hosts = hosts_of(plan)
    default = render("enclave-engine.service.j2", role_vars(plan, hosts[0], hosts, engine_wheelhouse_url="http://w/"))
    assert "\nTimeoutStopSec=60\n" in default
    short = render("enclave-engine.service.j2", role_vars(plan, hosts[0], hosts, engine_wheelhouse_url="http://w/",
                                                           engine_stop_timeout_s=15))
    assert "\nTimeoutStopSec=15\n" in short and "TimeoutStopSec=60" not in short


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_unit_carries_the_contract(case: Path) -> None:
    plan = load_plan(case)
    for host, variables, unit in rendered(case):
        lines = set(unit.splitlines())
        for wanted in ("User=enclave", "Group=enclave", "NoNewPrivileges=yes", "ProtectSystem=strict",
                       "ProtectHome=yes", "PrivateTmp=yes", "ReadOnlyPaths=/srv/enclave/models",
                       "EnvironmentFile=/etc/enclave/engine.env",
                       "EnvironmentFile=/etc/enclave/engine-api-key.env",
                       f"TimeoutStartSec={plan['readiness_timeout_s']}"):
            assert wanted in lines, f"{case.stem} {host}: {wanted} missing"
        assert "k" * 32 not in unit
        argv = exec_start_argv(unit)
        assert argv[0] == f"/opt/enclave/vllm-{variables['engine_installed_version']}/bin/vllm"
        assert argv[1:3] == ["serve", f"/srv/enclave/models/{plan['repo'].replace('/', '--')}/current"]
        assert "--api-key" not in argv
        head = variables["engine_replica"]["rank"] == 0
        assert ("Restart=on-failure" if head else "Restart=always") in lines
        assert ("--headless" in argv) != head
        if head:
            address = variables["engine_private"]["address"]
            assert argv[argv.index("--host") + 1] == address and argv[argv.index("--port") + 1] == "8000"
            assert f"http://{address}:8000/health" in unit
        else:
            assert "--host" not in argv and "ExecStartPost" not in unit


def test_private_address_and_interface_come_from_the_private_network() -> None:
    plan = load_plan(named("sandbox-cpu"))
    variables = role_vars(plan, "node1", ["node1", "node2"])
    assert variables["engine_private"] == {"address": "10.20.0.11", "interface": "eth0"}


def test_cpu_pipeline_across_nodes_uses_vllms_native_launcher() -> None:
    plan = load_plan(named("sandbox-cpu-pp2"))
    argvs = {h: exec_start_argv(u) for h, _, u in rendered(named("sandbox-cpu-pp2"))}
    assert plan["replicas"][0]["hosts"] == ["node1", "node2"]
    for rank, host in enumerate(["node1", "node2"]):
        argv = argvs[host]
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--node-rank") + 1] == str(rank)
        assert argv[argv.index("--master-addr") + 1] == "10.20.0.11"


def test_data_parallel_across_nodes_splits_the_ranks() -> None:
    case = named("pro-h100-2node-dp")
    argvs = {h: exec_start_argv(u) for h, _, u in rendered(case)}
    assert argvs["node1"][argvs["node1"].index("--data-parallel-start-rank") + 1] == "0"
    assert argvs["node2"][argvs["node2"].index("--data-parallel-start-rank") + 1] == "8"
    assert all(a[a.index("--data-parallel-size-local") + 1] == "8" for a in argvs.values())
    assert all("--nnodes" not in a for a in argvs.values())


def test_json_arguments_survive_systemd_quoting() -> None:
    case = named("flash-h200-dp4ep")
    _, _, unit = next(rendered(case))
    argv = exec_start_argv(unit)
    assert argv[argv.index("--speculative-config") + 1] == '{"method": "mtp", "num_speculative_tokens": 1}'


def test_environment_is_offline_without_telemetry_and_keeps_the_key_out() -> None:
    plan = load_plan(named("sandbox-cpu"))
    variables = role_vars(plan, "node2", hosts_of(plan), engine_extra_env={"EXTRA": "a b$c"})
    env = render("engine.env.j2", variables)
    for line in ('HF_HUB_OFFLINE="1"', 'TRANSFORMERS_OFFLINE="1"', 'VLLM_NO_USAGE_STATS="1"', 'DO_NOT_TRACK="1"',
                 'HF_HUB_DISABLE_TELEMETRY="1"', 'HF_HUB_DISABLE_XET="1"', 'VLLM_HOST_IP="10.20.0.12"',
                 'GLOO_SOCKET_IFNAME="eth0"', 'EXTRA="a b\\$c"', f'ENCLAVE_MODEL_REVISION="{plan["revision"]}"'):
        assert line in env.splitlines(), line
    assert "k" * 32 not in env
    key = render("engine-api-key.env.j2", variables)
    assert f'VLLM_API_KEY="{"k" * 32}"' in key.splitlines()


@pytest.fixture(scope="module")
def engine_venv() -> Path:
    """vLLM from the sandbox wheelhouse, installed on this machine (cached; built on first use)."""
    try:
        house = Wheelhouse(paths.cache_dir() / "wheelhouse", SANDBOX_BUILD)
        house.ensure()
        return ensure_venv(house, paths.cache_dir() / "engine-venvs")
    except (EnclaveError, OSError, subprocess.SubprocessError) as exc:
        reason = f"vLLM's argument parser is not available here ({exc}): run `enclave bundle --kind cpu`"
        skip_or_fail(reason)


def test_every_rendered_argument_list_passes_vllms_parser(engine_venv: Path) -> None:
    labels, argvs = [], []
    for case in CASES:
        for host, _, unit in rendered(case):
            labels.append(f"{case.stem}/{host}")
            argvs.append(exec_start_argv(unit)[1:])
    verdicts = check_serve_args(engine_venv, argvs)
    rejected = {label: verdict for label, verdict in zip(labels, verdicts, strict=True) if verdict}
    assert not rejected, rejected


def test_vllms_parser_rejects_a_misspelled_flag(engine_venv: Path) -> None:
    good = ["serve", "/srv/m", "--max-model-len", "256"]
    verdicts = check_serve_args(engine_venv, [good, [*good, "--max-modle-len", "256"],
                                              [*good, "--tensor-parallel-size", "two"]])
    assert verdicts[0] is None
    assert verdicts[1] and "max-modle-len" in verdicts[1]
    assert verdicts[2] and "two" in verdicts[2]


def test_every_profile_flag_passes_vllms_parser(engine_venv: Path) -> None:
    """Each shipped profile's flags for each hardware class, alone and with every opt-in option (the recipe's
    flags change between vLLM releases: its Blackwell FP4 indexer cache flag is gone from 0.32)."""
    from enclave.plan.profiles import available, load_profile

    labels, argvs = [], []
    for name in available():
        profile = load_profile(name)
        for klass in profile.hardware_classes:
            for options in ([], list(profile.options)):
                labels.append(f"{name}/{klass}/{'+'.join(options) or '-'}")
                argvs.append(["serve", "/srv/m", *profile.args_for(klass, options)])
    verdicts = check_serve_args(engine_venv, argvs)
    rejected = {label: verdict for label, verdict in zip(labels, verdicts, strict=True) if verdict}
    assert not rejected, rejected
