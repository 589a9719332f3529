from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from enclave.errors import UsageError
from enclave.sandbox.spec import SandboxSpec


def test_default_shape_is_a_gateway_and_two_nodes() -> None:
    spec = SandboxSpec()
    assert [h.name for h in spec.hosts] == ["gateway", "node1", "node2"]
    assert spec.hosts[0].groups == ("enclave_gateway", "enclave_staging")
    assert all(h.groups == ("enclave_nodes",) for h in spec.hosts[1:])
    assert all(h.address in spec.network for h in spec.hosts)
    assert spec.controller_address == spec.network.network_address + 1


def test_interface_names_fit_linux_limits_for_the_longest_name() -> None:
    spec = SandboxSpec(name="abcdefg", inference_nodes=16)
    names = [spec.bridge] + [n for h in spec.hosts for n in (h.veth_host(spec.name), h.veth_peer(spec.name))]
    assert max(len(n) for n in names) <= 15
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("subnet", [None, "10.9.0.0/27", "192.168.50.0/24"])
def test_the_sink_is_in_the_subnet_and_held_by_no_host(subnet: str | None) -> None:
    spec = SandboxSpec(name="sink", inference_nodes=16, subnet=ipaddress.IPv4Network(subnet) if subnet else None)
    assert spec.sink_address in spec.network
    assert spec.sink_address not in {spec.controller_address, *(h.address for h in spec.hosts)}
    assert spec.sink_address not in (spec.network.network_address, spec.network.broadcast_address)


def test_names_of_two_sandboxes_never_share_a_prefix() -> None:
    a, b = SandboxSpec(name="test"), SandboxSpec(name="test2")
    assert not b.hosts[1].netns(b.name).startswith(f"enclave-{a.name}-")
    assert not b.hosts[1].veth_host(b.name).startswith(f"{a.bridge}-")


def test_each_name_gets_its_own_subnet() -> None:
    assert SandboxSpec(name="default").network != SandboxSpec(name="test").network
    assert SandboxSpec(name="test").network.is_private


@pytest.mark.parametrize("kwargs", [{"name": "Upper"}, {"name": "toolongname"}, {"name": "9lives"},
                                    {"inference_nodes": 0}, {"inference_nodes": 17},
                                    {"subnet": ipaddress.IPv4Network("8.8.8.0/24")},
                                    {"subnet": ipaddress.IPv4Network("10.0.0.0/30")}])
def test_bad_specs_are_usage_errors(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        SandboxSpec(**kwargs)


def test_sandbox_mirror_serves_the_base_packages_and_no_gpu_ones() -> None:
    from enclave import paths
    from enclave.sandbox.pkgrepo import role_packages

    served = role_packages(paths.roles_dir())
    assert {"chrony", "rsync", "acl"} <= set(served)
    assert not [p for p in served if "nvidia" in p or "*" in p]


def test_sandbox_mirror_serves_the_monitoring_packages_and_not_dcgm() -> None:
    from enclave import paths
    from enclave.sandbox.pkgrepo import role_packages

    served = set(role_packages(paths.roles_dir()))
    assert {"prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "prometheus-nginx-exporter"} <= served
    # the DCGM exporter comes from NVIDIA's repository, on GPU nodes only: the sandbox has neither
    assert not [p for p in served if "dcgm" in p or "datacenter-gpu" in p]


def test_sandbox_inventory_sets_a_watchable_monitoring_pace_and_the_tests_webhook(tmp_path: Path) -> None:
    import yaml

    from enclave.runner.inventory import validate
    from enclave.sandbox import inventory

    spec = SandboxSpec(name="mon", subnet=ipaddress.IPv4Network("10.231.0.0/24"))
    text = inventory.render(spec, private_key=tmp_path / "key", known_hosts=tmp_path / "known_hosts",
                            repo_public_key="-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n", model_revision="a" * 40,
                            hub_client_lock_sha256="b" * 64)
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    found = validate(path, reachable=False)  # every monitoring_* name is one the role declares, with its type
    assert found.groups["enclave_gateway"] == ["gateway"]
    variables = yaml.safe_load(text)["all"]["vars"]
    assert variables["monitoring_webhook_urls"] == [f"http://10.231.0.1:{inventory.WEBHOOK_PORT}/alerts"]
    assert variables["monitoring_alert_engine_down_for"] == "15s" and variables["monitoring_retention_size_gb"] == 1
    # a stop that meets an engine's start is killed after 15 s (the role's default is 60; validate() above checked
    # the name and type against the engine role's argument spec)
    assert variables["engine_stop_timeout_s"] == 15


def test_a_sandbox_on_an_offline_kit_names_no_source_of_its_own(tmp_path: Path) -> None:
    """`sandbox up --offline-kit`: the inventory names no package mirror, wheel server or hub of the controller's
    (the kit import writes the kit's), the engine settings only the API key; the rest is the same inventory."""
    import yaml

    from enclave.kit import importer
    from enclave.sandbox import engine_settings, inventory

    spec = SandboxSpec(name="kit", subnet=ipaddress.IPv4Network("10.232.0.0/24"))
    common = {"private_key": tmp_path / "key", "known_hosts": tmp_path / "known_hosts", "model_revision": "a" * 40}
    own = yaml.safe_load(inventory.render(spec, repo_public_key="KEY\n", hub_client_lock_sha256="b" * 64,
                                          **common))["all"]["vars"]
    kit = yaml.safe_load(inventory.render(spec, repo_public_key=None, hub_client_lock_sha256=None,
                                          **common))["all"]["vars"]
    sources = {"enclave_apt_sources", "enclave_apt_sources_exclusive", "weights_source",
               "weights_hub_client_find_links", "weights_hub_client_lock_sha256"}
    assert sources <= set(own) and not sources & set(kit)
    assert {k: v for k, v in own.items() if k not in sources} == kit
    # the controller still gives time and takes alerts, nothing else
    assert {k for k, v in kit.items() if "10.232.0.1" in yaml.safe_dump(v)} == {"base_ntp_servers",
                                                                                 "monitoring_webhook_urls"}
    written = engine_settings.write_engine_vars(tmp_path / "inv", "http://10.232.0.1:8810/w/", "c" * 64)
    key = yaml.safe_load(written.read_text())["engine_api_key"]
    engine_settings.write_engine_vars(tmp_path / "inv", None, None)
    assert yaml.safe_load(written.read_text()) == {"engine_api_key": key}  # the key is kept, nothing else
    # so the kit import's settings clash with nothing the sandbox wrote
    assert importer.conflicts(tmp_path / "inv", ["engine_wheelhouse_url", "engine_wheelhouse_lock_sha256"]) == []
