"""Inventory validation before any host is touched.

Findings, each naming the file (and line for YAML errors), the variable or the host:
YAML that does not parse; an inventory Ansible cannot read; missing enclave groups; unknown `enclave_*` or
role variables (likely typos, with a suggestion); values of the wrong type; kit directories that are system
directories, a root service user, host names and addresses that are not host names (host_inputs.py); hosts that
do not answer SSH.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from enclave import paths
from enclave.ansible_env import ansible_env
from enclave.errors import InventoryError, UsageError
from enclave.plan.host_inputs import KIT_DIRS, check_address, check_host, check_kit_dir, check_service_user
from enclave.plan.known_vars import KnownVars, load_known_vars
from enclave.plan.parallelism import parse_overrides
from enclave.plan.profiles import REVISION_RE
from enclave.ssh_probe import probe_ssh

REQUIRED_GROUPS = {"enclave_nodes": "GPU hosts that run the engine", "enclave_gateway": "the client entry point",
                   "enclave_staging": "the one host that fetches weights"}
_YAML_SUFFIXES = {".yml", ".yaml", ".json", ""}


@dataclass
class Inventory:
    path: Path
    groups: dict[str, list[str]]
    hostvars: dict[str, dict[str, Any]]

    def hosts(self, group: str = "all") -> list[str]:
        if group == "all":
            return sorted(self.hostvars)
        return sorted(self.groups.get(group, []))

    def enclave_hosts(self) -> list[str]:
        return sorted({h for g in REQUIRED_GROUPS for h in self.groups.get(g, [])})


@dataclass
class _Found:
    file: Path
    where: str
    values: dict[str, Any] = field(default_factory=dict)


class _Loader(yaml.SafeLoader):
    """Safe YAML that tolerates Ansible's tags (vault-encrypted values, unsafe strings)."""


def _opaque(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    return f"<{suffix or 'tagged'} value>"


_Loader.add_multi_constructor("!", _opaque)


def load_yaml(path: Path) -> Any:
    text = path.read_text(errors="replace")
    if text.startswith("$ANSIBLE_VAULT"):
        return None  # a whole-file vault: its keys are checked by Ansible once decrypted
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise InventoryError(f"{where}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path}: invalid YAML: {exc}") from None


def _vars_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            found += [f for f in sorted(entry.rglob("*")) if f.is_file() and f.suffix in _YAML_SUFFIXES]
        elif entry.suffix in _YAML_SUFFIXES and not entry.name.startswith("."):
            found.append(entry)
    return found


def _walk_group(data: Any, file: Path, group: str, found: list[_Found]) -> None:
    if not isinstance(data, dict):
        return
    if isinstance(data.get("vars"), dict):
        found.append(_Found(file, f"group '{group}'", data["vars"]))
    for host, hvars in (data.get("hosts") or {}).items():
        if isinstance(hvars, dict):
            found.append(_Found(file, f"host '{host}'", hvars))
    for child, cdata in (data.get("children") or {}).items():
        _walk_group(cdata, file, child, found)


def collect_variables(path: Path) -> list[_Found]:
    """Every variable the inventory sets, with the file that sets it (YAML sources and *_vars dirs)."""
    base = path if path.is_dir() else path.parent
    sources = [f for f in sorted(path.iterdir()) if f.is_file()] if path.is_dir() else [path]
    found: list[_Found] = []
    for source in sources:
        if source.suffix in (".yml", ".yaml"):
            data = load_yaml(source)
            if isinstance(data, dict):
                for group, gdata in data.items():
                    _walk_group(gdata, source, str(group), found)
    for kind in ("group_vars", "host_vars"):
        for file in _vars_files(base / kind):
            data = load_yaml(file)
            owner = (file.parent.name if file.parent.name != kind else file.stem)
            if data is not None and not isinstance(data, dict):
                raise InventoryError(f"{file}: expected a mapping of variables, got {type(data).__name__}")
            found.append(_Found(file, f"{kind.split('_')[0]} '{owner}'", data or {}))
    return found


def ansible_inventory(path: Path) -> Inventory:
    env = {**os.environ, **ansible_env(path),
           # Without these, an unreadable source is a warning and an empty inventory.
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True"}
    try:
        proc = subprocess.run(["ansible-inventory", "-i", str(path), "--list"], capture_output=True, text=True,
                              env=env, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InventoryError(f"{path}: ansible-inventory could not run: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        said = [ln for ln in lines if "ERROR" in ln or "Unable to parse" in ln] or lines[-3:]
        raise InventoryError(f"{path}: Ansible cannot read this inventory", said)
    data = json.loads(proc.stdout)
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    groups: dict[str, list[str]] = {}

    def hosts_of(group: str, seen: frozenset[str] = frozenset()) -> set[str]:
        entry = data.get(group) or {}
        members = set(entry.get("hosts") or [])
        for child in entry.get("children") or []:
            if child not in seen:
                members |= hosts_of(child, seen | {group})
        return members

    for group in data:
        if group != "_meta":
            groups[group] = sorted(hosts_of(group))
    for host in {h for members in groups.values() for h in members}:
        hostvars.setdefault(host, {})
    return Inventory(path=path, groups=groups, hostvars=hostvars)


def check_groups(inventory: Inventory) -> list[str]:
    problems = []
    for group, purpose in REQUIRED_GROUPS.items():
        if not inventory.groups.get(group):
            problems.append(f"group '{group}' ({purpose}) is missing or has no hosts")
    if len(inventory.groups.get("enclave_staging", [])) > 1:
        problems.append("group 'enclave_staging' must hold exactly one host (the one that fetches weights); has "
                        + ", ".join(inventory.groups["enclave_staging"]))
    for group in inventory.groups:
        if group.startswith("enclave_") and group not in REQUIRED_GROUPS:
            hint = difflib.get_close_matches(group, list(REQUIRED_GROUPS), n=1)
            problems.append(f"unknown group '{group}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    return problems


_PY_TYPES = {"bool": bool, "list": list, "dict": dict, "int": int, "str": str, "path": str, "raw": object}


def check_variables(found: list[_Found], known: KnownVars) -> list[str]:
    problems = []
    for entry in found:
        for name, value in entry.values.items():
            name = str(name)
            if name in known.internal:
                problems.append(f"{entry.file}: {entry.where} sets '{name}', which the kit sets itself "
                                "(role vars win over the inventory); remove it")
            elif known.owns(name) and name not in known.names:
                hint = difflib.get_close_matches(name, sorted(known.names), n=1, cutoff=0.7)
                problems.append(f"{entry.file}: unknown variable '{name}' in {entry.where}"
                                + (f" (did you mean '{hint[0]}'?)" if hint else " (likely a typo)"))
            elif name in known.types and not _templated(value):
                expected = _PY_TYPES.get(known.types[name], object)
                if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                    problems.append(f"{entry.file}: '{name}' in {entry.where} must be a {known.types[name]}, "
                                    f"got {type(value).__name__} {value!r}"[:300])
            if name in _CHECKED and not _templated(value):
                try:
                    _CHECKED[name](value, f"{entry.file}: {name} in {entry.where}")
                except UsageError as exc:
                    problems.append(str(exc))
            if name == "enclave_private_network" and isinstance(value, str) and value and not _templated(value):
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError:
                    problems.append(f"{entry.file}: enclave_private_network in {entry.where} is not a CIDR: "
                                    f"{value!r}")
    return problems


def _check_revision(value: Any, where: str) -> None:
    if value not in (None, "") and not (isinstance(value, str) and REVISION_RE.fullmatch(value)):
        raise UsageError(f"{where} must be a 40-hex commit id (lower case), got {value!r}")


# Values whose meaning the planner defines: checked here too, so a typo fails before any host is touched.
_CHECKED: dict[str, Callable[[Any, str], Any]] = {"enclave_parallelism": parse_overrides,
                                                  "enclave_model_revision": _check_revision,
                                                  # What reaches a host's file system or a command line.
                                                  **dict.fromkeys(KIT_DIRS, check_kit_dir),
                                                  "enclave_user": check_service_user,
                                                  "ansible_host": check_address}


def check_host_names(inventory: Inventory, found: list[_Found]) -> list[str]:
    """Every host's name (with the file that names it where a YAML source does) and its ansible_host where no
    YAML source sets it (check_variables names the file of those)."""
    files = {entry.where.removeprefix("host '").removesuffix("'"): entry.file
             for entry in found if entry.where.startswith("host '")}
    literal = {str(entry.values["ansible_host"]) for entry in found if "ansible_host" in entry.values}
    problems = []
    for host in inventory.hosts():
        file = files.get(host, inventory.path)
        address = inventory.hostvars[host].get("ansible_host")
        try:
            check_host(host, str(file))
            if address is not None and str(address) not in literal and not _templated(address):
                check_address(address, f"{file}: ansible_host of host '{host}'")
        except UsageError as exc:
            problems.append(str(exc))
    return problems


def _templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or value.startswith("<"))


def check_reachable(inventory: Inventory, timeout: float = 5.0) -> list[str]:
    targets = []
    for host in inventory.enclave_hosts():
        hv = inventory.hostvars.get(host, {})
        if hv.get("ansible_connection", "ssh") not in ("ssh", "paramiko", "smart"):
            continue
        address = str(hv.get("ansible_host") or host)
        if "{{" in address:
            continue
        port = int(hv.get("ansible_port") or hv.get("ansible_ssh_port") or 22)
        targets.append((host, address, port))
    with ThreadPoolExecutor(max_workers=min(32, len(targets) or 1)) as pool:
        answers = list(pool.map(lambda t: probe_ssh(t[1], t[2], timeout), targets))
    return [f"host '{host}' ({address}:{port}) is unreachable: {why}"
            for (host, address, port), why in zip(targets, answers, strict=True) if why]


def validate(path: Path, *, reachable: bool = True, known: KnownVars | None = None) -> Inventory:
    """Everything that can be known about an inventory without touching a host (and an SSH probe)."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise InventoryError(f"{path}: no such inventory file or directory")
    found = collect_variables(path)
    inventory = ansible_inventory(path)
    problems = check_groups(inventory)
    problems += check_variables(found, known or load_known_vars(paths.roles_dir()))
    problems += check_host_names(inventory, found)
    if problems:
        raise InventoryError(f"{path}: the inventory has {len(problems)} problem(s)", problems)
    if reachable:
        unreachable = check_reachable(inventory)
        if unreachable:
            raise InventoryError(f"{path}: {len(unreachable)} host(s) do not answer SSH; nothing was changed",
                                 unreachable)
    return inventory
