"""Inventory validation before any host is touched.

Findings, each naming the file (and line for YAML errors), the variable or the host:
YAML that does not parse, or is too big (MAX_FILE_BYTES, or MAX_NODES once aliases are expanded: a "billion
laughs" file); `hosts:`/`children:`/`vars:` that are not mappings; an inventory Ansible cannot read (vaulted files
are read with the operator's vault password file); missing enclave groups; unknown `enclave_*` or role variables
(likely typos, with a suggestion), in the inventory or in `-e`; values of the wrong type; a model name that is not a
profile name; a revision that is not a 40-hex commit; an `ansible_port` that is not a port; kit directories that
are system directories, a root service user, host names and addresses that are not host names (host_inputs.py).

Pure: Ansible's reading of the inventory (`ansible-inventory --list`) and the SSH probe of its hosts run in
enclave.runner.inventory, whose validate() puts the two together with these checks.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from enclave import paths
from enclave.errors import InventoryError, UsageError
from enclave.plan.host_inputs import KIT_DIRS, check_address, check_host, check_kit_dir, check_service_user
from enclave.plan.known_vars import KnownVars, load_known_vars
from enclave.plan.monitoring import MONITORING_GROUP, check_monitoring_group
from enclave.plan.parallelism import parse_overrides
from enclave.plan.profiles import check_model_name
from enclave.plan.settings import check_required
from enclave.revision import check_revision

REQUIRED_GROUPS = {"enclave_nodes": "GPU hosts that run the engine", "enclave_gateway": "the client entry point",
                   "enclave_staging": "the one host that fetches weights"}
_YAML_SUFFIXES = {".yml", ".yaml", ".json", ""}
# Bounds that keep validation to seconds: an inventory is kilobytes, a few hundred hosts a few thousand nodes.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000  # values, keys and items of one file, with every YAML alias expanded


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


def check_size(path: Path, where: str) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InventoryError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if not path.is_file():
        raise InventoryError(f"{where}: not a file")
    if size > MAX_FILE_BYTES:
        raise InventoryError(f"{where}: {size} bytes; an inventory file is at most {MAX_FILE_BYTES} bytes")


def read_bounded(path: Path, label: str = "") -> str:
    """The text of a file the operator gave, refused when it is not a readable file or bigger than MAX_FILE_BYTES."""
    where = f"{label}{path}"
    try:
        check_size(path, where)
        data = path.read_bytes()
    except OSError as exc:
        raise InventoryError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if b"\0" in data:
        raise InventoryError(f"{where}: a binary file, not YAML or text")
    return data.decode(errors="replace")


def load_yaml(path: Path, label: str = "") -> Any:
    """Safe YAML of bounded size and bounded expansion; errors name the file (after `label`) and line."""
    text = read_bounded(path, label)
    if text.startswith("$ANSIBLE_VAULT"):
        return None  # a whole-file vault: its keys are checked by Ansible once decrypted
    where = f"{label}{path}"
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise InventoryError(f"{line}: invalid YAML: {exc.problem or exc}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise InventoryError(f"{where}: invalid YAML: {exc}") from None
    if _expanded_size(data) > MAX_NODES:
        raise InventoryError(f"{where}: more than {MAX_NODES} values once its YAML aliases are expanded (an alias "
                             "bomb?); an inventory is far smaller")
    return data


def _expanded_size(data: Any) -> int:
    """Nodes of `data` as Ansible would see them (aliases copied), counted up to just past MAX_NODES."""
    count, stack = 0, [data]
    while stack and count <= MAX_NODES:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set):
            stack += list(item)
    return count


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


def _mapping(data: dict[str, Any], key: str, file: Path, group: str) -> dict[Any, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        shape = {"hosts": "host: vars", "children": "group: {hosts, vars, children}", "vars": "name: value"}[key]
        raise InventoryError(f"{file}: '{key}' of group '{group}' must be a mapping ({shape}), got "
                             f"{type(value).__name__}")
    return value


def _walk_group(data: Any, file: Path, group: str, found: list[_Found], depth: int = 0) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise InventoryError(f"{file}: group '{group}' must be a mapping (hosts, vars, children), got "
                             f"{type(data).__name__}")
    if depth > 100:
        raise InventoryError(f"{file}: groups nested more than 100 deep under '{group}'")
    group_vars = _mapping(data, "vars", file, group)
    if group_vars:
        found.append(_Found(file, f"group '{group}'", group_vars))
    for host, hvars in _mapping(data, "hosts", file, group).items():
        if isinstance(hvars, dict):
            found.append(_Found(file, f"host '{host}'", hvars))
    for child, cdata in _mapping(data, "children", file, group).items():
        _walk_group(cdata, file, str(child), found, depth + 1)


def collect_variables(path: Path) -> list[_Found]:
    """Every variable the inventory sets, with the file that sets it (YAML sources and *_vars dirs)."""
    base = path if path.is_dir() else path.parent
    sources = [f for f in sorted(path.iterdir()) if f.is_file()] if path.is_dir() else [path]
    found: list[_Found] = []
    for source in sources:
        if source.suffix not in (".yml", ".yaml"):
            check_size(source, str(source))  # INI and other sources: Ansible parses them, but only of a sane size
        else:
            data = load_yaml(source)
            if data is not None and not isinstance(data, dict):
                raise InventoryError(f"{source}: expected a mapping of groups, got {type(data).__name__}")
            if isinstance(data, dict) and "plugin" not in data:  # a plugin's config (constructed, ...) is no group
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


def inventory_from_listing(path: Path, data: dict[str, Any]) -> Inventory:
    """The Inventory `ansible-inventory --list` describes in `data` (its parsed JSON; enclave.runner.inventory
    runs it): groups with their children's hosts folded in, every host with its variables."""
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
    problems += check_monitoring_group(inventory.groups, REQUIRED_GROUPS)
    for group in inventory.groups:
        if group.startswith("enclave_") and group not in REQUIRED_GROUPS and group != MONITORING_GROUP:
            hint = difflib.get_close_matches(group, [*REQUIRED_GROUPS, MONITORING_GROUP], n=1)
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
    if value not in (None, ""):  # unset: `enclave plan` asks for one
        check_revision(value, where)


def _check_options(value: Any, where: str) -> None:
    # The names are checked against the model profile when planning (the profile may live beside the inventory).
    if value not in (None, "") and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise UsageError(f"{where} must be a list of option names such as [mtp], got {value!r}")


# Values whose meaning the planner defines: checked here too, so a typo fails before any host is touched.
_CHECKED: dict[str, Callable[[Any, str], Any]] = {"enclave_parallelism": parse_overrides,
                                                  "enclave_model_revision": _check_revision,
                                                  # What reaches a host's file system or a command line.
                                                  **dict.fromkeys(KIT_DIRS, check_kit_dir),
                                                  "enclave_user": check_service_user,
                                                  "ansible_host": check_address,
                                                  "enclave_model": check_model_name,
                                                  "enclave_model_options": _check_options}


def check_extra_vars(variables: dict[str, Any], known: KnownVars | None = None) -> None:
    """`-e` names and values under the inventory's rules (a typo there is as silent as in group_vars)."""
    entry = _Found(Path("--extra-vars"), "-e", variables)
    known = known or load_known_vars(paths.roles_dir())
    # -e outranks role vars, so an internal name is an override there, not an ignored value; and KEY=VALUE is
    # always a string that Ansible converts as each use needs, so no type check: typos and planner values only.
    problems = check_variables([entry], KnownVars(known.names | known.internal, frozenset(), known.prefixes, {}))
    if problems:
        raise UsageError(problems[0] if len(problems) == 1 else "; ".join(problems))


def check_hosts(inventory: Inventory) -> list[str]:
    """Connection settings that would otherwise fail deep inside the SSH probe or Ansible."""
    problems = []
    for host, hv in sorted(inventory.hostvars.items()):
        for name in ("ansible_port", "ansible_ssh_port"):
            if name in hv and _port(hv[name]) is None:
                problems.append(f"host '{host}': {name} must be a TCP port (1-65535), got {hv[name]!r}"[:300])
    return problems


def _port(value: Any) -> int | None:
    if _templated(value):
        return 22
    text = str(value).strip()
    return int(text) if text.isdigit() and 0 < int(text) < 65536 and not isinstance(value, bool) else None


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


def ssh_targets(inventory: Inventory) -> list[tuple[str, str, int]]:
    """(host, address, port) of every enclave host reached over SSH, for the probe before a run."""
    targets = []
    for host in inventory.enclave_hosts():
        hv = inventory.hostvars.get(host, {})
        if hv.get("ansible_connection", "ssh") not in ("ssh", "paramiko", "smart"):
            continue
        address = str(hv.get("ansible_host") or host)
        if "{{" in address:
            continue
        port = _port(hv.get("ansible_port") or hv.get("ansible_ssh_port") or 22) or 22
        targets.append((host, address, port))
    return targets


def static_problems(inventory: Inventory, found: list[_Found], known: KnownVars, extra_vars: dict[str, Any],
                    required: Collection[str]) -> list[str]:
    """Everything wrong with an inventory that can be known from its files and Ansible's reading of them."""
    problems = check_groups(inventory) + check_hosts(inventory)
    problems += check_variables(found, known)
    problems += check_required(inventory, extra_vars, paths.roles_dir(), required)
    problems += check_host_names(inventory, found)
    return problems
