"""The engine's and the weights seed's units as the roles render them, rated by the real `systemd-analyze security
--offline=true --threshold=N` against the limits in the role defaults (the same numbers `enclave verify` holds the
running units to), for a CPU host and a GPU host, plus `systemd-analyze verify` of the seed unit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from enclave.checks.exposure import parse
from tests.host_tools import require_tool
from tests.unit.engine_render import render, role_vars
from tests.unit.role_render import REPO, ROLES
from tests.unit.role_render import render as role_render

ENGINE_LIMIT = float(yaml.safe_load((ROLES / "engine" / "defaults" / "main.yml").read_text())[
    "engine_security_exposure_max"])
SEED_LIMIT = float(yaml.safe_load((ROLES / "weights" / "defaults" / "main.yml").read_text())[
    "weights_seed_security_exposure_max"])
CASES = Path(__file__).parent / "engine_cases"


def rate(path: Path, limit: float) -> float:
    """The unit's exposure; asserts systemd-analyze's own --threshold verdict agrees with the limit."""
    require_tool("systemd-analyze")
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--threshold={round(limit * 10)}",
                           "--no-pager", str(path)], capture_output=True, text=True, check=False)
    exposure = parse(proc.stdout)
    assert exposure is not None, proc.stdout + proc.stderr
    # --threshold takes the limit x10 (0-100) and exits nonzero above it: systemd's own verdict.
    assert (proc.returncode == 0) == (exposure.score <= limit), proc.stdout[-400:] + proc.stderr
    return exposure.score


def engine_units(case: str, tmp: Path) -> list[tuple[str, Path]]:
    plan = yaml.safe_load((CASES / f"{case}.yml").read_text())
    hosts = [h for r in plan["replicas"] for h in r["hosts"]]
    units = []
    for host in hosts:
        variables = role_vars(plan, host, hosts, engine_wheelhouse_url="http://10.20.0.1/w/")
        path = tmp / case / host / "enclave-engine.service"
        path.parent.mkdir(parents=True)
        path.write_text(render("enclave-engine.service.j2", variables))
        units.append((host, path))
    return units


# One-node and two-node (pipeline parallel) replicas on CPU hosts; tensor parallel and two-node on GPU hosts.
@pytest.mark.parametrize("case", ["sandbox-cpu", "sandbox-cpu-pp2", "flash-h200-tp8", "pro-h100-2node-pp"])
def test_engine_unit_is_within_its_exposure_limit(case: str, tmp_path: Path) -> None:
    for host, path in engine_units(case, tmp_path):
        score = rate(path, ENGINE_LIMIT)
        assert score <= ENGINE_LIMIT, f"{case} {host}: enclave-engine.service rates {score}, limit {ENGINE_LIMIT}"


def test_engine_devices_follow_the_hardware(tmp_path: Path) -> None:
    (_, cpu), *_ = engine_units("sandbox-cpu", tmp_path)
    (_, gpu), *_ = engine_units("flash-h200-tp8", tmp_path)
    cpu_lines, gpu_lines = set(cpu.read_text().splitlines()), set(gpu.read_text().splitlines())
    # A CPU build sees no device at all; a GPU build the NVIDIA nodes (GPUs, control, UVM, caps) and nothing else.
    assert "PrivateDevices=yes" in cpu_lines and not any(ln.startswith("DeviceAllow=") for ln in cpu_lines)
    assert {"DevicePolicy=closed", "DeviceAllow=char-nvidia* rw"} <= gpu_lines
    assert "PrivateDevices=yes" not in gpu_lines  # a private /dev would hold no /dev/nvidia* at all
    # vLLM and torch JIT-compile: writable+executable memory must stay allowed.
    assert not any(ln.startswith("MemoryDenyWriteExecute=") for ln in cpu_lines | gpu_lines)


@pytest.fixture(scope="module")
def seed_units(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The seed's unit and rsyncd.conf on the default port (unprivileged) and on rsync's own 873 (privileged)."""
    units = {}
    for host, port in (("unprivileged", 8730), ("privileged", 873)):
        # The port as extra vars: the play loads the role defaults as vars_files, which beat inventory variables.
        rendered = role_render(tmp_path_factory.mktemp(host), roles=["weights"], groups={"enclave_staging": {host: {}}},
                               templates={"unit": "weights/enclave-weights-seed.service.j2",
                                          "conf": "weights/rsyncd.conf.j2"},
                               extra={"enclave_private_network": "10.20.0.0/24", "weights_own_address": "10.20.0.10",
                                      "weights_rsync_port": port})
        units[host], units[f"{host}.conf"] = rendered[host]["unit"], rendered[host]["conf"]
    return units


@pytest.mark.parametrize("host", ["unprivileged", "privileged"])
def test_seed_unit_is_within_its_exposure_limit(seed_units: dict[str, str], host: str, tmp_path: Path) -> None:
    path = tmp_path / "enclave-weights-seed.service"
    path.write_text(seed_units[host])
    score = rate(path, SEED_LIMIT)
    assert score <= SEED_LIMIT, f"{host}: enclave-weights-seed.service rates {score}, limit {SEED_LIMIT}"


def test_seed_runs_unprivileged_with_the_least_capability(seed_units: dict[str, str]) -> None:
    # CAP_SYS_CHROOT for rsyncd's chroot; binding a port below 1024 adds CAP_NET_BIND_SERVICE and nothing else.
    for host, capabilities in (("unprivileged", "CAP_SYS_CHROOT"),
                               ("privileged", "CAP_SYS_CHROOT CAP_NET_BIND_SERVICE")):
        lines = set(seed_units[host].splitlines())
        assert {"User=enclave-seed", "Group=enclave-seed", f"CapabilityBoundingSet={capabilities}",
                f"AmbientCapabilities={capabilities}"} <= lines, f"{host}:\n{seed_units[host]}"
        # Switching users needs root: not asked of a daemon that is not root. The chroot (CAP_SYS_CHROOT) stays.
        conf = seed_units[f"{host}.conf"]
        assert "use chroot = yes" in conf.splitlines()
        assert not [ln for ln in conf.splitlines() if ln.split("=")[0].strip() in ("uid", "gid")]


def test_seed_unit_passes_systemd_analyze_verify(seed_units: dict[str, str], tmp_path: Path) -> None:
    require_tool("systemd-analyze")
    require_tool("rsync")
    path = tmp_path / "enclave-weights-seed.service"
    path.write_text(seed_units["unprivileged"])
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                          check=False)
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "enclave-weights-seed" in ln]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_repo_is_the_checkout() -> None:
    assert (REPO / "templates" / "weights" / "enclave-weights-seed.service.j2").is_file()
