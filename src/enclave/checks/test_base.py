"""base: the service user, the directories of the host contract, package sources, time sync, kernel settings."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.checks.settings import render, role_data

testinfra_hosts = ["ansible://all"]


def test_service_user(host: Any, settings: dict[str, Any]) -> None:
    user = host.user(settings["enclave_user"])
    assert user.exists, f"service user {settings['enclave_user']} is missing"
    assert 0 < user.uid < 1000, f"{user.name} has uid {user.uid}: expected a system user (not root, below 1000)"
    assert user.group == settings["enclave_group"], f"{user.name}'s group is {user.group}"
    assert user.shell.endswith("nologin"), f"{user.name} can log in (shell {user.shell})"


def test_contract_directories(host: Any, settings: dict[str, Any]) -> None:
    wrong = []
    for entry in render(role_data("base", "vars")["base_directories"], settings):
        f = host.file(entry["path"])
        if not f.is_directory:
            wrong.append(f"{entry['path']} is missing")
            continue
        found = (f.user, f.group, f"{f.mode:04o}")
        wanted = (entry["owner"], entry["group"], entry["mode"])
        if found != wanted:
            wrong.append(f"{entry['path']} is {':'.join(found[:2])} {found[2]}, should be "
                         f"{':'.join(wanted[:2])} {wanted[2]}")
    assert not wrong, "; ".join(wrong)


def test_package_sources(host: Any, settings: dict[str, Any]) -> None:
    sources = host.file("/etc/apt/sources.list.d/enclave.sources")
    if not settings["enclave_apt_sources"]:
        pytest.skip("no enclave_apt_sources configured: the distribution's sources are in use")
    assert sources.exists, "/etc/apt/sources.list.d/enclave.sources is missing"
    for source in settings["enclave_apt_sources"]:
        for uri in source["uris"]:
            assert uri in sources.content_string, f"source {source['name']} ({uri}) is not configured"
    if settings["enclave_apt_sources_exclusive"]:
        assert not host.file("/etc/apt/sources.list.d/debian.sources").exists, "distribution sources are back"


def test_time_sync(host: Any, settings: dict[str, Any]) -> None:
    chrony = host.service("chrony")
    assert chrony.is_running, "chrony is not running"
    assert chrony.is_enabled, "chrony is not enabled at boot"
    tracking = host.run("chronyc -n tracking")
    assert tracking.rc == 0, f"chronyc tracking failed: {tracking.stderr.strip()}"
    sources = host.run("chronyc -n sources").stdout
    leap = next((ln for ln in tracking.stdout.splitlines() if ln.startswith("Leap status")), tracking.stdout.strip())
    # The sources table says why (^? unreachable, Reach 0: nothing answered; ^x: a falseticker), so name it too.
    table = " | ".join(" ".join(ln.split()) for ln in sources.splitlines()[2:]) or "none"
    assert "Leap status     : Normal" in tracking.stdout, f"chrony is not synchronised: {leap}; sources: {table}"
    for server in settings["base_ntp_servers"]:
        assert server in sources, f"NTP server {server} is not among chrony's sources"


def test_kernel_settings(host: Any, settings: dict[str, Any], in_container: bool) -> None:
    wanted = {**settings["base_sysctl"], **settings["base_sysctl_extra"]}
    conf = host.file("/etc/sysctl.d/90-enclave.conf")
    assert conf.exists, "/etc/sysctl.d/90-enclave.conf is missing"
    for key, value in wanted.items():
        assert f"{key} = {value}" in conf.content_string, f"{key} = {value} is not in 90-enclave.conf"
    if in_container:
        pytest.skip("inside a container the kernel is the host's: the file is checked, the running values are not")
    differ = [f"{k} is {host.sysctl(k)}, should be {v}" for k, v in wanted.items() if str(host.sysctl(k)) != str(v)]
    assert not differ, "; ".join(differ)
