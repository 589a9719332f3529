"""`enclave sandbox up|down|status`: the whole sandbox, its recorded state and recovery from leftovers."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave import paths
from enclave.errors import SandboxError, UsageError
from enclave.locks import file_lock
from enclave.pids import signal_pids
from enclave.sandbox import client_keys as gateway_sandbox
from enclave.sandbox import engine_settings as engine_sandbox
from enclave.sandbox import hub, inventory, network, services, system
from enclave.sandbox.image import BaseImage, host_debian_mirror
from enclave.sandbox.node import BootExit, Node
from enclave.sandbox.pkgrepo import PackageRepo, role_packages
from enclave.sandbox.spec import SandboxSpec
from enclave.ssh_probe import answers_ssh, probe_ssh
from enclave.weights import signer

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class HostStatus:
    name: str
    address: str
    groups: tuple[str, ...]
    pid: int | None
    running: bool
    ssh: bool


@dataclass
class SandboxStatus:
    name: str
    network: str
    exists: bool
    inventory: Path | None
    hosts: list[HostStatus] = field(default_factory=list)
    services: dict[str, bool] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.exists and all(h.running and h.ssh for h in self.hosts) and all(self.services.values())


@dataclass
class TeardownReport:
    nodes_stopped: list[str] = field(default_factory=list)
    services_stopped: list[str] = field(default_factory=list)
    netns_deleted: list[str] = field(default_factory=list)
    links_deleted: list[str] = field(default_factory=list)
    state_removed: Path | None = None


class Sandbox:
    def __init__(self, name: str, *, state_root: Path | None = None, cache: Path | None = None) -> None:
        SandboxSpec(name=name)  # validates the name
        self.name = name
        self.home = (state_root or paths.state_dir()) / "sandbox" / name
        self.cache = (cache or paths.cache_dir()) / "sandbox"

    # -- recorded state -------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def inventory_path(self) -> Path:
        return self.home / "inventory" / "hosts.yml"

    @property
    def private_key(self) -> Path:
        return self.home / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.home / "ssh" / "known_hosts"

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise SandboxError(f"{self.state_file}: unreadable sandbox state ({exc}); "
                               f"`enclave sandbox down --name {self.name}` clears it") from exc

    def _save(self, state: dict[str, Any]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    def recorded_spec(self, state: dict[str, Any] | None = None) -> SandboxSpec | None:
        spec = (self._load() if state is None else state).get("spec")
        if not spec:
            return None
        return SandboxSpec(name=self.name, inference_nodes=spec["inference_nodes"],
                           subnet=ipaddress.IPv4Network(spec["subnet"]))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.home.parent / f".{self.name}.lock"):
            yield

    # -- up -------------------------------------------------------------------------------------
    def up(self, *, nodes: int | None = None, subnet: ipaddress.IPv4Network | None = None,
           offline_kit: bool | None = None, report: Report = _quiet) -> SandboxStatus:
        """Create or resume the sandbox. offline_kit True: the controller serves the nodes no packages, wheels or
        weights (its hub stand-in, package and wheel servers stop) and the inventory names none, for a site kit
        imported with `enclave kit import`; False: back to the sandbox's own sources; None: as recorded."""
        system.require_host()
        with self._locked():
            state = self._load()
            spec = self._resolve_spec(state, nodes, subnet)
            kit_mode = bool(state.get("offline_kit")) if offline_kit is None else offline_kit
            image = BaseImage(self.cache, host_debian_mirror())
            image_root = image.ensure(report)
            repo = PackageRepo(self.cache, image, tuple(role_packages(paths.roles_dir()))).ensure(report)
            weights_source = hub.ensure(self.cache, report)
            engine_wheels = engine_sandbox.ensure_served_wheelhouse(self.cache.parent, weights_source.wheels,
                                                                   report)
            if state.get("image") not in (None, image.key):
                report("the base image changed since the nodes were made: recreating their disks")
                self._stop_nodes(state, report)
                shutil.rmtree(self.home / "nodes", ignore_errors=True)
                # New disks, so a new staging host and signing key: the inventory's pin of the old one would refuse it.
                signer.pin_path(self.inventory_path).unlink(missing_ok=True)
                state["nodes"] = {}
            state.update(spec={"inference_nodes": spec.inference_nodes, "subnet": str(spec.network)},
                         image=image.key, offline_kit=kit_mode)
            state.setdefault("nodes", {})
            state.setdefault("services", {})
            self._save(state)

            network.check_subnet_free(spec.network, spec.bridge)
            network.ensure_bridge(spec.bridge, spec.controller_address, spec.network)
            self._ensure_services(state, spec, repo, weights_source, report, kit_mode=kit_mode)
            self._remove_extra_nodes(state, spec, report)
            public_key = self._ensure_admin_key()
            hosts_lines = [f"{h.address} {h.name}" for h in spec.hosts]
            started: list[tuple[Node, int]] = []
            for host in spec.hosts:
                node = Node(self.name, host, self.home / "nodes" / host.name)
                pid = state["nodes"].get(host.name)
                if (node.running(pid) and network.host_plumbed(node.netns, host.veth_host(self.name),
                                                                spec.bridge)
                        and answers_ssh(str(host.address))):
                    network.ensure_default_route(node.netns, spec.sink_address)
                    continue
                report(f"starting {host.name} ({host.address})")
                node.stop(pid)  # whatever an earlier run left of it
                network.plumb_host(node.netns, host.veth_host(self.name), host.veth_peer(self.name),
                                   spec.bridge, host.address, spec.network)
                network.ensure_default_route(node.netns, spec.sink_address)
                node.prepare(public_key, hosts_lines)
                state["nodes"][host.name] = node.start(image_root)
                self._save(state)
                started.append((node, state["nodes"][host.name]))
            for node, pid in started:
                try:
                    node.wait_ssh(pid)
                except BootExit as exc:
                    # Seen once in a full CI run (a third node's nspawn gone before it printed a line, cause not
                    # found): one more start, with the first exit's cause in the report; a second exit fails.
                    report(f"{exc}; starting {node.host.name} once more")
                    node.stop(pid)
                    state["nodes"][node.host.name] = pid = node.start(image_root)
                    self._save(state)
                    node.wait_ssh(pid)
            if started:
                report(f"{len(started)} node(s) booted and answering SSH")
            self._write_inventory(spec, weights_source, sources=not kit_mode)
            if kit_mode:
                engine_sandbox.write_engine_vars(self.inventory_path.parent, None, None)
            else:
                engine_sandbox.write_engine_vars(
                    self.inventory_path.parent, f"http://{spec.controller_address}:{hub.WHEELS_PORT}/{engine_wheels}/",
                    engine_sandbox.served_lock_sha256(self.cache.parent))
            gateway_sandbox.write_gateway_vars(self.inventory_path.parent)
            return self._status(state, spec)

    def _resolve_spec(self, state: dict[str, Any], nodes: int | None,
                      subnet: ipaddress.IPv4Network | None) -> SandboxSpec:
        recorded = state.get("spec") or {}
        old_subnet = ipaddress.IPv4Network(recorded["subnet"]) if recorded.get("subnet") else None
        if subnet is not None and old_subnet is not None and subnet != old_subnet:
            raise UsageError(f"sandbox {self.name!r} already uses {old_subnet}; run `enclave sandbox down` "
                             "before changing --subnet")
        count = nodes if nodes is not None else recorded.get("inference_nodes")
        spec = SandboxSpec(name=self.name, **({"inference_nodes": count} if count else {}),
                           subnet=subnet or old_subnet)
        return spec

    def _ensure_services(self, state: dict[str, Any], spec: SandboxSpec, repo: Path, weights: hub.HubContent,
                         report: Report, *, kit_mode: bool) -> None:
        logs = self.home / "logs"
        address = spec.controller_address
        ports = {"packages": services.PACKAGE_PORT, "hub": hub.HUB_PORT, "wheels": hub.WHEELS_PORT}
        wanted = [services.ntp_server(self.home, address, spec.network, logs)]
        if not kit_mode:
            wanted += [services.package_server(repo, address, logs), hub.hub_server(weights, address, logs),
                       hub.wheels_server(weights, address, logs)]
        # On an offline site kit the nodes get nothing from the controller but time: its other servers stop.
        for name in [n for n in state["services"] if n not in {d.name for d in wanted}]:
            record = state["services"].pop(name)
            services.recorded(name, record, logs).stop(record.get("pid"))
            self._save(state)
            report(f"stopped the {name} service: the nodes install from the offline site kit")
        for daemon in wanted:
            record = state["services"].get(daemon.name) or {}
            if record.get("marker") == daemon.marker and daemon.alive(record.get("pid")):
                continue
            # One started for an older package repository (or by a crashed run) is replaced.
            services.recorded(daemon.name, record, logs).stop(record.get("pid"))
            pid = daemon.start()
            state["services"][daemon.name] = {"pid": pid, "marker": daemon.marker}
            self._save(state)
            report(f"started the {daemon.name} service for the nodes (pid {pid})")
            services.require_started(daemon, pid)
            if daemon.name in ports:
                services.require_listening(daemon, pid, str(address), ports[daemon.name])

    def _remove_extra_nodes(self, state: dict[str, Any], spec: SandboxSpec, report: Report) -> None:
        wanted = {h.name for h in spec.hosts}
        for name in [n for n in state["nodes"] if n not in wanted]:
            extra = spec.host(name)
            node = Node(self.name, extra, self.home / "nodes" / name)
            report(f"removing {name}: the sandbox now has {spec.inference_nodes} inference node(s)")
            node.stop(state["nodes"][name])
            network.delete_link(extra.veth_host(self.name))
            network.delete_netns(node.netns)
            shutil.rmtree(node.home, ignore_errors=True)
            del state["nodes"][name]
            self._save(state)

    def _ensure_admin_key(self) -> str:
        if not self.private_key.is_file():
            self.private_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"enclave-sandbox-{self.name}",
                        "-f", self.private_key])
        return self.private_key.with_suffix(".pub").read_text()

    def _write_inventory(self, spec: SandboxSpec, weights: hub.HubContent, *, sources: bool) -> None:
        lines = [Node(self.name, h, self.home / "nodes" / h.name).known_hosts_line() for h in spec.hosts]
        self.known_hosts.write_text("".join(f"{line}\n" for line in lines))
        self.inventory_path.parent.mkdir(parents=True, exist_ok=True)
        public_key = (self.cache / "repo-key" / "public.asc").read_text() if sources else None
        self.inventory_path.write_text(inventory.render(
            spec, private_key=self.private_key, known_hosts=self.known_hosts, repo_public_key=public_key,
            model_revision=weights.revision, hub_client_lock_sha256=weights.client_lock_sha256))

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> SandboxStatus:
        state = self._load()
        spec = self.recorded_spec(state)
        if spec is None:
            return SandboxStatus(self.name, "-", exists=False, inventory=None)
        return self._status(state, spec)

    def _status(self, state: dict[str, Any], spec: SandboxSpec) -> SandboxStatus:
        result = SandboxStatus(self.name, str(spec.network), exists=True,
                               inventory=self.inventory_path if self.inventory_path.is_file() else None)
        for host in spec.hosts:
            node = Node(self.name, host, self.home / "nodes" / host.name)
            pid = state.get("nodes", {}).get(host.name)
            running = node.running(pid)
            result.hosts.append(HostStatus(host.name, str(host.address), host.groups, pid, running,
                                           running and probe_ssh(str(host.address), timeout=1) is None))
        logs = self.home / "logs"
        for name, record in sorted(state.get("services", {}).items()):
            result.services[name] = services.recorded(name, record, logs).alive(record.get("pid"))
        return result

    # -- down -----------------------------------------------------------------------------------
    def down(self, report: Report = _quiet) -> TeardownReport:
        system.require_host()
        done = TeardownReport()
        with self._locked():
            state = self._load()
            done.nodes_stopped = self._stop_nodes(state, report)
            for name, record in state.get("services", {}).items():
                daemon = services.recorded(name, record, self.home / "logs")
                if daemon.alive(record.get("pid")):
                    daemon.stop(record.get("pid"))
                    done.services_stopped.append(name)
            # By name as well as by record: a crashed `up` may have made links it never wrote down.
            for ns in network.list_netns(f"enclave-{self.name}-"):
                signal_pids(network.netns_pids(ns), signal.SIGKILL)
                network.delete_netns(ns)
                done.netns_deleted.append(ns)
            bridge = SandboxSpec(name=self.name).bridge
            for link in [*network.list_links(f"{bridge}-"), *network.list_links(f"encp-{self.name}-")]:
                if network.delete_link(link):
                    done.links_deleted.append(link)
            if network.delete_link(bridge):
                done.links_deleted.append(bridge)
            if self.home.exists():
                shutil.rmtree(self.home)
                done.state_removed = self.home
        return done

    def _stop_nodes(self, state: dict[str, Any], report: Report) -> list[str]:
        stopped: list[str] = []
        spec = self.recorded_spec(state)
        if spec is None:
            return stopped
        pids = state.get("nodes", {})
        for host in sorted({*spec.hosts, *(spec.host(n) for n in pids)}, key=lambda h: h.index):
            node = Node(self.name, host, self.home / "nodes" / host.name)
            if node.running(pids.get(host.name)) or network.netns_pids(node.netns):
                report(f"stopping {host.name}")
                node.stop(pids.get(host.name))
                stopped.append(host.name)
        return stopped
