"""engine: enclave-engine.service on every host of the plan's replicas: enabled and running as the service user,
the API bound to the private address only, offline and without telemetry, the key in a closed file and never on
the command line, the unit confined (`systemd-analyze security` at most engine_security_exposure_max)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from enclave.checks.exposure import judge, unit_exposure
from enclave.checks.settings import host_settings, render, role_data
from enclave.roles import host_name

testinfra_hosts = ["ansible://enclave_nodes"]

UNIT = host_name("enclave_engine_unit")
# What the role's engine.env must give the engine's processes (a subset of the role's engine_offline_env).
OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "VLLM_NO_USAGE_STATS",
           "DO_NOT_TRACK")


@pytest.fixture
def engine(host: Any, hostvars: dict[str, Any]) -> dict[str, Any]:
    settings = host_settings(hostvars, "engine")
    plan = settings.get("enclave_plan")
    if not isinstance(plan, dict):
        pytest.skip("no plan in the inventory (group_vars/all/enclave_plan.yml): run `enclave plan` or deploy first")
    name = hostvars["inventory_hostname"]
    replica = next((r for r in plan.get("replicas") or [] if name in (r.get("hosts") or [])), None)
    if replica is None:
        pytest.skip(f"{name} is in no replica of the plan: it runs no engine")
    variables = role_data("engine", "vars")
    for key in ("engine_env_file", "engine_key_file"):
        settings[key] = render(variables[key], settings)
    settings.update(plan=plan, replica=replica, head=replica["hosts"][0] == name)
    return settings


def _main_pid(host: Any) -> int:
    pid = int(host.run(f"systemctl show --property MainPID --value {UNIT}").stdout.strip() or 0)
    assert pid > 0, f"{UNIT} has no main process"
    return pid


def _private_address(host: Any, network: str) -> str:
    net = ipaddress.IPv4Network(network, strict=False)
    for line in host.run("ip -4 -o addr show").stdout.splitlines():
        address = line.split()[3].split("/")[0]
        if ipaddress.IPv4Address(address) in net:
            return address
    raise AssertionError(f"no address inside enclave_private_network {network}")


def test_engine_unit_enabled_and_active(host: Any, engine: dict[str, Any]) -> None:
    service = host.service(UNIT)
    assert service.is_enabled, f"{UNIT} is not enabled at boot"
    state = host.run(f"systemctl is-active {UNIT}").stdout.strip()
    assert state == "active", f"{UNIT} is {state}, not active"


def test_engine_listens_on_the_private_address_only(host: Any, engine: dict[str, Any]) -> None:
    port = int(engine["plan"]["port"])
    listening = {line.split()[3].rsplit(":", 1)[0].strip("[]")
                 for line in host.run("ss -Hltn").stdout.splitlines()
                 if line.split() and line.split()[3].rsplit(":", 1)[-1] == str(port)}
    if not engine["head"]:
        assert not listening, f"a headless worker serves port {port} on {', '.join(sorted(listening))}"
        return
    private = _private_address(host, engine["enclave_private_network"])
    assert listening, f"nothing listens on port {port}"
    assert listening == {private}, (f"the engine listens on {', '.join(sorted(listening))}:{port}; it must listen "
                                    f"on the private address {private} only")


def test_engine_runs_as_the_service_user(host: Any, engine: dict[str, Any]) -> None:
    pid = _main_pid(host)
    # Every process whose cgroup lines equal the main process's: works on cgroup v2 and on v1/hybrid hosts (and in
    # containers) where /sys/fs/cgroup does not show the unit's ControlGroup path.
    script = (f"cg=$(cat /proc/{pid}/cgroup); for p in /proc/[0-9]*; do "
              '[ "$(cat $p/cgroup 2>/dev/null)" = "$cg" ] && echo ${p#/proc/}; done')
    pids = host.run(script).stdout.split() or [str(pid)]
    users = {p: host.run(f"ps -o user= -p {p}").stdout.strip() for p in pids}
    wrong = {p: u for p, u in users.items() if u and u != engine["enclave_user"]}
    assert not wrong, f"engine processes not running as {engine['enclave_user']}: " + ", ".join(
        f"pid {p} as {u}" for p, u in sorted(wrong.items()))


def test_engine_environment_is_offline_without_telemetry(host: Any, engine: dict[str, Any]) -> None:
    with host.sudo():
        raw = host.run(f"cat /proc/{_main_pid(host)}/environ").stdout
    env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    has_key = env.pop("VLLM_API_KEY", None) is not None  # the value never reaches a report
    wrong = [f"{key} is {env[key]!r}" if key in env else f"{key} is not set" for key in OFFLINE
             if env.get(key) != "1"]
    assert not wrong, "the engine may reach outside hosts: " + "; ".join(wrong)
    assert has_key, "the engine has no API key (VLLM_API_KEY): it would serve anyone"


def test_engine_key_file_is_closed_and_off_the_command_line(host: Any, engine: dict[str, Any]) -> None:
    key_file = host.file(engine["engine_key_file"])
    assert key_file.exists, f"{key_file.path} is missing"
    found = (key_file.user, key_file.group, f"{key_file.mode:04o}")
    # Only systemd (as root) reads it (the role writes it so): the service user gets the key in its environment only.
    wanted = ("root", "root", "0600")
    assert found == wanted, f"{key_file.path} is {found[0]}:{found[1]} {found[2]}, should be " \
                            f"{wanted[0]}:{wanted[1]} {wanted[2]}"
    with host.sudo():
        cmdline = host.run(f"tr '\\0' ' ' < /proc/{_main_pid(host)}/cmdline").stdout
    assert "--api-key" not in cmdline, "the API key is passed on the engine's command line (visible in ps)"


def test_engine_unit_is_confined(host: Any, engine: dict[str, Any], request: pytest.FixtureRequest) -> None:
    judge(request, engine["inventory_hostname"], UNIT, unit_exposure(host, UNIT),
          float(engine["engine_security_exposure_max"]))
