"""Settings a deploy cannot go without, checked on the controller before any host is touched.

The roles assert the same (engine/, gateway/, weights/ and monitoring/tasks/validate.yml), but
only once their play starts: by then the firewall is up and the weights have moved. Here the values are read from
the inventory as Ansible merged it (and `-e`, which outranks it); the rules the roles define as data (the key pattern,
the source types) are read from the roles, so they are defined once. A value Ansible has not resolved (a template
other than a plain `{{ name }}`, an inline vault value without its password) is left to the roles. Messages name the
host and the variable, never a key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from enclave.plan import limits, monitoring

if TYPE_CHECKING:  # the inventory module calls this one
    from enclave.plan.inventory import Inventory

ROLES = ("engine", "gateway", "weights", "monitoring")

_UNKNOWN = limits.UNKNOWN  # a value only Ansible can resolve
_REF_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")  # engine/tasks/validate.yml, weights/tasks/validate.yml: a pinned lock


def _role_file(roles_dir: Path, role: str, *parts: str) -> dict[str, Any]:
    data = yaml.safe_load((roles_dir / role / Path(*parts)).read_text())
    return data if isinstance(data, dict) else {}


def _resolved(name: str, hostvars: dict[str, Any], extra: dict[str, Any], default: Any) -> Any:
    return _resolve(extra[name] if name in extra else hostvars.get(name, default), hostvars, extra)


def _resolve(value: Any, hostvars: dict[str, Any], extra: dict[str, Any]) -> Any:
    for _ in range(5):  # "{{ vault_engine_api_key }}" -> the vaulted value, when Ansible could decrypt it
        ref = _REF_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if ref is None:
            break
        value = extra.get(ref.group(1), hostvars.get(ref.group(1), _UNKNOWN))
    if (isinstance(value, str) and "{{" in value) or (isinstance(value, dict) and "__ansible_vault" in value):
        return _UNKNOWN
    return value


def roles_run(tags: Collection[str] = (), skip_tags: Collection[str] = ()) -> tuple[str, ...]:
    """The roles of ROLES a site.yml run with these tags reaches (their tags are their names)."""
    return tuple(r for r in ROLES if (not tags or r in tags or "all" in tags) and r not in skip_tags)


def check_required(inventory: Inventory, extra: dict[str, Any], roles_dir: Path,
                   roles: Collection[str] = ROLES) -> list[str]:
    """engine_api_key (and, with a wheelhouse, its lock's pinned sha256) on every node, gateway_api_keys and the
    per-client limits on every gateway, weights_source (and, from a hub, the hub client's pinned lock) on the
    staging host (each only for a role in `roles`), and the monitoring host's receivers and retention."""
    problems: list[str] = []
    if not roles:
        return problems
    # one line per finding: "host 'gpu01'" becomes "hosts 'gpu01', 'gpu02'" when they share it
    merged: dict[str, list[str]] = {}
    gateway_vars = _role_file(roles_dir, "gateway", "vars", "main.yml")
    gateway_defaults = _role_file(roles_dir, "gateway", "defaults", "main.yml")
    key_pattern = re.compile(str(gateway_vars["gateway_key_pattern"]))
    client_pattern = re.compile(str(gateway_vars["gateway_client_pattern"]))
    spec = _role_file(roles_dir, "weights", "meta", "argument_specs.yml")["argument_specs"]["stage"]["options"]
    source_types = list(spec["weights_source"]["options"]["type"]["choices"])
    for host in inventory.hosts("enclave_nodes") if "engine" in roles else ():
        key = _resolved("engine_api_key", inventory.hostvars.get(host, {}), extra, "")
        if key is not _UNKNOWN and not (isinstance(key, str) and len(key) >= 16 and " " not in key):
            problems.append(f"host '{host}': engine_api_key is missing, shorter than 16 characters or contains "
                            "spaces (set it in Ansible Vault: docs/runbooks/engine.md)")
    for host in inventory.hosts("enclave_gateway") if "gateway" in roles else ():
        hostvars = inventory.hostvars.get(host, {})
        current = _resolved("gateway_api_keys", hostvars, extra, {})
        problems += _gateway_keys(host, current, key_pattern, client_pattern,
                                  lambda value, hv=hostvars: _resolve(value, hv, extra))
        problems += _retired_keys(host, _resolved("gateway_retired_api_keys", hostvars, extra, []), current,
                                  key_pattern)
        problems += limits.check_client_limits(
            host, lambda name, hv=hostvars: _resolved(name, hv, extra, gateway_defaults.get(name)), gateway_vars)
    for host in inventory.hosts("enclave_nodes") if "engine" in roles else ():
        hostvars = inventory.hostvars.get(host, {})
        if _resolved("engine_wheelhouse_url", hostvars, extra, ""):
            problems += _lock_pin(host, hostvars, extra, "engine_wheelhouse", "engine_wheelhouse_url",
                                  "`enclave bundle` prints it; or `sha256sum requirements.txt` in the wheelhouse")
    for host in inventory.hosts("enclave_staging") if "weights" in roles else ():
        source = _resolved("weights_source", inventory.hostvars.get(host, {}), extra, {})
        why = "" if source is _UNKNOWN else _source_problem(source, source_types)
        if why:
            problems.append(f"host '{host}': weights_source must be {{type: hf, endpoint: URL}}, {{type: local, "
                            f"path: DIR}} or {{type: http, url: http(s)://...}}; {why} (docs/runbooks/weights.md)")
        elif isinstance(source, dict) and source.get("type") == "hf":
            problems += _lock_pin(host, inventory.hostvars.get(host, {}), extra, "weights_hub_client",
                                  "weights_source type hf", "`sha256sum requirements.txt` beside the hub client's "
                                  "wheels: docs/runbooks/weights.md")
    chosen = monitoring.monitoring_host(inventory.groups) if "monitoring" in roles else None
    if chosen is not None:
        problems += _monitoring(chosen, inventory.hostvars.get(chosen, {}), extra, roles_dir)
    for problem in problems:
        host, _, said = problem.partition(": ")
        merged.setdefault(said, []).append(host.removeprefix("host "))
    return [f"host{'s' if len(hosts) > 1 else ''} {', '.join(hosts)}: {said}" for said, hosts in merged.items()]


MONITORING_SETTINGS = ("monitoring_webhook_urls", "monitoring_smtp", "monitoring_retention_size_gb",
                       "monitoring_retention_time", "monitoring_grafana", "monitoring_grafana_admin_password")


def _monitoring(host: str, hostvars: dict[str, Any], extra: dict[str, Any], roles_dir: Path) -> list[str]:
    """The monitoring host's receivers and retention (enclave.plan.monitoring, with the role's own patterns)."""
    patterns = {k: str(v) for k, v in _role_file(roles_dir, "monitoring", "vars", "main.yml").items()
                if k.endswith("_pattern")}
    values = {name: _resolved(name, hostvars, extra, None) for name in MONITORING_SETTINGS}
    return monitoring.check_settings(host, {k: v for k, v in values.items() if v is not None and v is not _UNKNOWN},
                                     patterns, unresolved={k for k, v in values.items() if v is _UNKNOWN})


def _lock_pin(host: str, hostvars: dict[str, Any], extra: dict[str, Any], prefix: str, needed_by: str,
              how: str) -> list[str]:
    """A hash lock fetched from the server that also serves its wheels is trusted only by the sha256 the operator
    pins (PREFIX_lock_sha256), or by an explicit PREFIX_lock_unpinned: true (docs/security.md)."""
    name = f"{prefix}_lock_sha256"
    pin = _resolved(name, hostvars, extra, "")
    unpinned = _resolved(f"{prefix}_lock_unpinned", hostvars, extra, False)
    if pin is _UNKNOWN or unpinned is _UNKNOWN:
        return []
    if pin in ("", None):
        if unpinned is True:
            return []
        return [f"host '{host}': {name} is not set; {needed_by} needs the lock's sha256 pinned ({how}), or "
                f"{prefix}_lock_unpinned: true to trust whatever the server serves (docs/security.md)"]
    if not (isinstance(pin, str) and _SHA256_RE.fullmatch(pin)):
        return [f"host '{host}': {name} {str(pin)[:80]!r} is not a sha256 (64 lowercase hex digits; {how})"]
    return []


def _gateway_keys(host: str, keys: Any, pattern: re.Pattern[str], client: re.Pattern[str],
                  resolve: Callable[[Any], Any]) -> list[str]:
    if keys is _UNKNOWN:
        return []
    if not isinstance(keys, dict) or not keys:
        return [f"host '{host}': gateway_api_keys is empty or not a mapping; give the gateway a map of client name "
                "-> API key (in Ansible Vault)"]
    problems = []
    for name, key in keys.items():
        if not client.fullmatch(str(name)):
            problems.append(f"host '{host}': gateway_api_keys entry {str(name)[:70]!r}: a client name is 1-64 of "
                            "A-Z a-z 0-9 _ . -")
        elif (value := resolve(key)) is not _UNKNOWN and not (isinstance(value, str) and pattern.fullmatch(value)):
            problems.append(f"host '{host}': gateway_api_keys entry '{name}': a key is 20-200 of A-Z a-z 0-9 . _ ~ + "
                            "/ = -")
    return problems


def _retired_keys(host: str, retired: Any, keys: Any, pattern: re.Pattern[str]) -> list[str]:
    """Keys replaced by `enclave keys rotate` (gateway/tasks/validate.yml asserts the same): each names a current
    client, holds a usable key and an expiry in seconds since the epoch (ten digits: what nginx's check reads)."""
    if retired is _UNKNOWN or keys is _UNKNOWN or not isinstance(keys, dict):
        return []
    if not isinstance(retired, list):
        return [f"host '{host}': gateway_retired_api_keys must be a list of {{name, key, expires}} (`enclave keys` "
                "writes it: docs/runbooks/gateway.md)"]
    problems = []
    for entry in retired:
        name = entry.get("name") if isinstance(entry, dict) else None
        ok = (isinstance(entry, dict) and name in keys and isinstance(entry.get("key"), str)
              and bool(pattern.fullmatch(entry["key"])) and isinstance(entry.get("expires"), int)
              and 10**9 <= entry["expires"] < 10**10)
        if not ok:
            problems.append(f"host '{host}': gateway_retired_api_keys entry for {str(name)[:70]!r} must name a client "
                            "of gateway_api_keys and hold its old key (20-200 of A-Z a-z 0-9 . _ ~ + / = -) and "
                            "expires (seconds since the epoch): docs/runbooks/gateway.md")
    return problems


def _source_problem(source: Any, types: list[str]) -> str:
    if not isinstance(source, dict) or not source:
        return "it is not set" if source in ({}, None, "") else f"got a {type(source).__name__}"
    kind = source.get("type")
    if kind not in types:
        return f"type {kind!r} is not one of {', '.join(types)}"
    if kind == "local" and not source.get("path"):
        return "type local needs a path"
    if kind == "http" and not re.match(r"https?://", str(source.get("url") or "")):
        return "type http needs an http(s):// url"
    return ""
