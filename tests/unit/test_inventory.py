"""Inventory validation on broken inputs: each finding names the file, variable or host, and what to do."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave import paths
from enclave.errors import InventoryError
from enclave.runner.inventory import validate

GOOD_VARS = {"enclave_private_network": "10.20.0.0/24"}


def write_inventory(directory: Path, *, all_vars: dict[str, Any] | None = None,
                    groups: dict[str, list[str]] | None = None, host_port: int = 22) -> Path:
    groups = groups if groups is not None else {
        "enclave_nodes": ["n1", "n2"], "enclave_gateway": ["gw"], "enclave_staging": ["gw"]}
    hosts = {h for members in groups.values() for h in members}
    children = {g: {"hosts": {h: None for h in members}} for g, members in groups.items()}
    data = {"all": {"vars": {**GOOD_VARS, **(all_vars or {})},
                    "hosts": {h: {"ansible_host": "127.0.0.1", "ansible_port": host_port} for h in sorted(hosts)},
                    "children": children}}
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        validate(path, reachable=False)
    assert caught.value.exit_code == 2
    return caught.value.problems or [str(caught.value)]


def test_valid_inventory_passes(tmp_path: Path) -> None:
    inventory = validate(write_inventory(tmp_path), reachable=False)
    assert inventory.hosts("enclave_nodes") == ["n1", "n2"]
    assert inventory.enclave_hosts() == ["gw", "n1", "n2"]


def test_shipped_example_inventories_are_valid() -> None:
    examples = sorted(p for p in (paths.share_dir() / "inventory").iterdir() if p.is_dir())
    assert examples, "the package ships at least one example inventory"
    for example in examples:
        validate(example, reachable=False)


def test_yaml_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  children:\n    enclave_nodes:\n      hosts: [unclosed\n")
    [message] = problems_of(path)
    assert f"{path}:5:" in message and "invalid YAML" in message


def test_yaml_error_in_group_vars_names_that_file(tmp_path: Path) -> None:
    write_inventory(tmp_path)
    (tmp_path / "group_vars").mkdir()
    bad = tmp_path / "group_vars" / "all.yml"
    bad.write_text("enclave_user: enclave\n  base_packages: [a\n")
    [message] = problems_of(tmp_path / "hosts.yml")
    assert str(bad) in message and ":2:" in message


def test_missing_groups_are_named(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, groups={"enclave_nodes": ["n1"]})
    problems = problems_of(path)
    assert any("'enclave_gateway'" in p and "missing" in p for p in problems)
    assert any("'enclave_staging'" in p for p in problems)


def test_two_staging_hosts_are_refused(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, groups={"enclave_nodes": ["n1", "n2"], "enclave_gateway": ["n1"],
                                             "enclave_staging": ["n1", "n2"]})
    assert any("exactly one host" in p for p in problems_of(path))


def test_misspelt_group_gets_a_suggestion(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, groups={"enclave_nodes": ["n1"], "enclave_gateway": ["n1"],
                                             "enclave_staging": ["n1"], "enclave_node": ["n2"]})
    assert any("unknown group 'enclave_node'" in p and "'enclave_nodes'" in p for p in problems_of(path))


def test_unknown_enclave_variable_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, all_vars={"enclave_privat_network": "10.0.0.0/8"})
    [problem] = problems_of(path)
    assert str(path) in problem
    assert "unknown variable 'enclave_privat_network'" in problem
    assert "did you mean 'enclave_private_network'" in problem


def test_unknown_role_variable_in_group_vars_dir(tmp_path: Path) -> None:
    write_inventory(tmp_path)
    (tmp_path / "group_vars" / "enclave_nodes").mkdir(parents=True)
    (tmp_path / "group_vars" / "enclave_nodes" / "base.yml").write_text("base_ntp_server: [10.0.0.1]\n")
    [problem] = problems_of(tmp_path / "hosts.yml")
    assert "group_vars/enclave_nodes/base.yml" in problem and "'base_ntp_servers'" in problem


def test_unrelated_variables_are_left_alone(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, all_vars={"site_owner": "ops", "ansible_user": "admin"})
    validate(path, reachable=False)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, all_vars={"enclave_apt_sources_exclusive": "yes please"})
    [problem] = problems_of(path)
    assert "'enclave_apt_sources_exclusive'" in problem and "must be a bool" in problem


def test_internal_variable_cannot_be_set(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, all_vars={"enclave_templates_dir": "/tmp/mine"})
    [problem] = problems_of(path)
    assert "enclave_templates_dir" in problem and "sets itself" in problem


def test_bad_cidr_is_named(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, all_vars={"enclave_private_network": "10.0.0.300/24"})
    [problem] = problems_of(path)
    assert "enclave_private_network" in problem and "not a CIDR" in problem


def test_inventory_ansible_cannot_parse(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("[enclave_nodes\nn1 ansible_host=1.2.3.4\n")
    with pytest.raises(InventoryError) as caught:
        validate(path, reachable=False)
    assert "Ansible cannot read this inventory" in str(caught.value)
    assert caught.value.problems


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no such inventory"):
        validate(tmp_path / "nope.yml")


@pytest.fixture
def ssh_banner_port() -> Iterator[int]:
    class Banner(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"SSH-2.0-enclave-test\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Banner)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_reachable_hosts_pass_the_ssh_probe(tmp_path: Path, ssh_banner_port: int) -> None:
    validate(write_inventory(tmp_path, host_port=ssh_banner_port), reachable=True)


def test_unreachable_hosts_are_listed(tmp_path: Path) -> None:
    port = closed_port()
    with pytest.raises(InventoryError) as caught:
        validate(write_inventory(tmp_path, host_port=port), reachable=True)
    assert "do not answer SSH; nothing was changed" in str(caught.value)
    assert sorted(p.split("'")[1] for p in caught.value.problems) == ["gw", "n1", "n2"]
    assert all(f"127.0.0.1:{port}" in p and "refused" in p.lower() for p in caught.value.problems)


@pytest.mark.parametrize(("name", "value"), [
    ("enclave_opt_dir", "/opt"), ("enclave_root", "/srv"), ("enclave_etc_dir", "/etc/"), ("enclave_root", "/"),
    ("enclave_models_dir", "/var"), ("enclave_home", "/home/alice"), ("enclave_home", "/root"),
    ("enclave_opt_dir", "/usr"), ("enclave_root", "/boot"), ("enclave_root", "/tmp"),
    ("enclave_opt_dir", "/opt/enclave/../other"), ("enclave_root", "srv/enclave"),
])
def test_system_directory_for_the_kit_is_refused(tmp_path: Path, name: str, value: str) -> None:
    write_inventory(tmp_path)
    (tmp_path / "group_vars").mkdir()
    file = tmp_path / "group_vars" / "all.yml"
    file.write_text(yaml.safe_dump({name: value}))
    [problem] = problems_of(tmp_path / "hosts.yml")
    assert str(file) in problem and name in problem


def test_own_directories_for_the_kit_pass(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, all_vars={"enclave_opt_dir": "/opt/acme-enclave", "enclave_root": "/data/llm",
                                               "enclave_models_dir": "/data/llm/store/models"})
    validate(path, reachable=False)


@pytest.mark.parametrize("user", ["root", "0"])
def test_root_service_user_is_refused(tmp_path: Path, user: str) -> None:
    path = write_inventory(tmp_path, all_vars={"enclave_user": user})
    [problem] = problems_of(path)
    assert str(path) in problem and "enclave_user" in problem and "root" in problem


@pytest.mark.parametrize("host", ["gw;touch${IFS}x", "gw$(id)", "-oProxyCommand=x", "gw_01"])
def test_host_name_that_is_not_a_host_name_is_refused(tmp_path: Path, host: str) -> None:
    path = write_inventory(tmp_path, groups={"enclave_nodes": ["n1"], "enclave_gateway": [host],
                                             "enclave_staging": ["n1"]})
    [problem] = problems_of(path)
    assert str(path) in problem and repr(host) in problem


def test_ansible_host_that_is_not_an_address_is_refused(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["all"]["hosts"]["gw"]["ansible_host"] = "10.0.0.1 -oProxyCommand=touch"
    path.write_text(yaml.safe_dump(data))
    [problem] = problems_of(path)
    assert str(path) in problem and "ansible_host" in problem and "host 'gw'" in problem


def test_ansible_host_in_an_ini_inventory_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("[enclave_nodes]\nn1 ansible_host=10.0.0.1\n[enclave_gateway]\ngw ansible_host='a;b'\n"
                    "[enclave_staging]\nn1\n[all:vars]\nenclave_private_network=10.0.0.0/24\n")
    [problem] = problems_of(path)
    assert "ansible_host of host 'gw'" in problem and "'a;b'" in problem
