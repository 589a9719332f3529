"""Render the engine role's templates the way its tasks do, for unit tests: role defaults and vars (Jinja,
resolved lazily like Ansible's), the role's own filters, a host's facts and the plan."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.nativetypes import NativeEnvironment

from enclave.roles import SHARED_HOST_NAMES, role_data

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "playbooks" / "roles" / "engine"
TEMPLATES = REPO / "templates" / "engine"
NETWORK = "10.20.0.0/24"


def _filters() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("engine_filters", ROLE / "filter_plugins" / "engine.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    filters = module.FilterModule().filters()
    filters["combine"] = lambda a, *more: {k: v for d in (a, *more) for k, v in d.items()}
    filters["ansible.builtin.relpath"] = lambda p, start: str(Path(p).relative_to(start))
    # Ansible's regex_replace: re.sub over the whole string (what engine_lock_url uses to trim a trailing slash)
    filters["regex_replace"] = lambda value, pattern="", replacement="": re.sub(pattern, replacement, str(value))
    return filters


FILTERS = _filters()


def host_facts(index: int, interface: str = "eth0") -> dict[str, Any]:
    address = str(ipaddress.IPv4Network(NETWORK).network_address + 10 + index)
    return {"interfaces": ["lo", interface], "lo": {"device": "lo", "ipv4": {"address": "127.0.0.1"}},
            interface: {"device": interface, "ipv4": {"address": address}}, "all_ipv4_addresses": [address]}


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def role_vars(plan: dict[str, Any], host: str, hosts: list[str], *, network: str = NETWORK,
              facts: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    """Every variable the templates see on `host`, with Jinja resolved (Ansible's precedence: vars over
    defaults, overrides like inventory group_vars over defaults). `facts`: each host's Ansible facts (default:
    one interface in `network` per host); the GPU smoke check passes the loopback's."""
    env = NativeEnvironment(undefined=jinja2.StrictUndefined)
    env.filters.update(FILTERS)
    facts = facts or {h: host_facts(i + 1) for i, h in enumerate(hosts)}
    raw: dict[str, Any] = {**_yaml(REPO / "playbooks/roles/enclave/defaults/main.yml"),
                           **{k: v for k, v in role_data("enclave", "vars").items() if k in SHARED_HOST_NAMES},
                           **_yaml(ROLE / "defaults" / "main.yml"), **overrides,
                           **_yaml(ROLE / "vars" / "main.yml")}
    raw.update(enclave_private_network=network, enclave_plan=plan, inventory_hostname=host,
               ansible_facts=facts[host], hostvars={h: {"ansible_facts": f} for h, f in facts.items()},
               engine_api_key="k" * 32, enclave_managed_header="Managed by enclave from templates/engine")
    # Ansible resolves lazily; here: passes until every value renders (a value that needs an unresolved one
    # fails with UndefinedError and is retried in the next pass).
    done = {k: v for k, v in raw.items() if not _templated(v)}
    pending = {k: v for k, v in raw.items() if _templated(v)}
    while pending:
        progressed = False
        for key, value in list(pending.items()):
            try:
                done[key] = _resolve(env, value, done)
            except jinja2.UndefinedError:
                continue
            del pending[key]
            progressed = True
        if not progressed:
            _resolve(env, next(iter(pending.values())), done)  # raises the real error
    return done


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def _resolve(env: NativeEnvironment, value: Any, known: dict[str, Any]) -> Any:
    if isinstance(value, str) and "{{" in value:
        return env.from_string(value).render(**known)
    if isinstance(value, dict):
        return {k: _resolve(env, v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(env, v, known) for v in value]
    return value


def render(template: str, variables: dict[str, Any]) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True,
                             autoescape=False)  # noqa: S701 - a unit file, not HTML
    env.filters.update(FILTERS)
    return env.from_string((TEMPLATES / template).read_text()).render(**variables)


def exec_start_argv(unit: str) -> list[str]:
    """ExecStart= of a rendered unit split as systemd does for the quoting systemd_quote writes."""
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))[len("ExecStart="):]
    words: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        assert line[i] == '"', f"unquoted word at {line[i:i + 20]!r}"
        i += 1
        word = []
        while line[i] != '"':
            if line[i] == "\\":
                word.append({"n": "\n", "t": "\t"}.get(line[i + 1], line[i + 1]))
                i += 2
            elif line[i] in "%$":
                assert line[i + 1] == line[i], f"lone {line[i]} in ExecStart"
                word.append(line[i])
                i += 2
            else:
                word.append(line[i])
                i += 1
        words.append("".join(word))
        i += 1
    return words
