"""The gateway's per-client limits, checked on the controller before any host is touched.

The settings (gateway_client_rate, _burst, _concurrent, _max_tokens, gateway_max_body_size, gateway_api_paths as
every client's default; gateway_client_limits: client name -> overrides; and token accounting's gateway_usage_paths
and gateway_usage_max_body_size) are described in the gateway role's defaults; what each
takes (the setting names, the rate and size patterns, the paths a max_tokens cap bounds) is read from the role's
vars, so the rules are defined once and gateway/tasks/validate.yml asserts the same on the host. Messages name the
host, the variable and the client.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

UNKNOWN = object()  # a value only Ansible can resolve: left to the role's own checks


def check_client_limits(host: str, get: Callable[[str], Any], rules: dict[str, Any]) -> list[str]:
    """Problems with one gateway host's limits. `get(name)` is the variable's value (the role default when the
    inventory has none, UNKNOWN when only Ansible can resolve it); `rules` are the role's vars."""
    rate_re, size_re = re.compile(rules["gateway_rate_pattern"]), re.compile(rules["gateway_size_pattern"])
    paths = get("gateway_api_paths")
    problems: list[str] = []

    def check(where: str, setting: str, value: Any) -> None:
        why = _problem(setting, value, rate_re, size_re, paths)
        if why:
            problems.append(f"host '{host}': {where}: {why} (docs/runbooks/gateway.md)")

    for setting, name in (("rate", "gateway_client_rate"), ("burst", "gateway_client_burst"),
                          ("concurrent", "gateway_client_concurrent"), ("max_body_size", "gateway_max_body_size"),
                          ("max_body_size", "gateway_usage_max_body_size"),
                          ("max_tokens", "gateway_client_max_tokens")):
        check(name, setting, get(name))
    # Token accounting's paths: any of the allow-list, or none (no accounting).
    accounted = get("gateway_usage_paths")
    if accounted not in (UNKNOWN, None, []):
        check("gateway_usage_paths", "endpoints", accounted)
    overrides = get("gateway_client_limits")
    problems += _unaccounted_caps(host, get, rules, overrides)
    if overrides is UNKNOWN or overrides in (None, {}):
        return problems
    if not isinstance(overrides, dict):
        return [*problems, f"host '{host}': gateway_client_limits must be a mapping of client name -> limits, got "
                           f"a {type(overrides).__name__}"]
    clients = get("gateway_api_keys")
    for client, own in overrides.items():
        where = f"gateway_client_limits entry {str(client)[:70]!r}"
        if isinstance(clients, dict) and client not in clients:
            problems.append(f"host '{host}': {where}: not a client of gateway_api_keys (clients: "
                            f"{', '.join(sorted(map(str, clients)))})")
            continue
        if own is UNKNOWN:
            continue
        if not isinstance(own, dict):
            problems.append(f"host '{host}': {where}: must be a mapping of any of "
                            f"{', '.join(rules['gateway_limit_settings'])}")
            continue
        for setting, value in own.items():
            if setting not in rules["gateway_limit_settings"]:
                problems.append(f"host '{host}': {where}: unknown setting {str(setting)[:40]!r} (one of "
                                f"{', '.join(rules['gateway_limit_settings'])})")
            else:
                check(f"{where} {setting}", setting, value)
    return problems


def _unaccounted_caps(host: str, get: Callable[[str], Any], rules: dict[str, Any], overrides: Any) -> list[str]:
    """A max_tokens cap is enforced where the gateway reads the body, on the accounted paths: a cap with a
    completion path left out of gateway_usage_paths would silently bound nothing there."""
    caps = [get("gateway_client_max_tokens")]
    if isinstance(overrides, dict):
        caps += [own.get("max_tokens") for own in overrides.values() if isinstance(own, dict)]
    paths, accounted = get("gateway_api_paths"), get("gateway_usage_paths")
    if not any(_whole(cap) and cap > 0 for cap in caps) or not isinstance(paths, list) or accounted is UNKNOWN:
        return []
    missing = [p for p in rules["gateway_max_tokens_paths"] if p in paths and p not in (accounted or [])]
    if not missing:
        return []
    return [f"host '{host}': gateway_usage_paths: a max_tokens cap is enforced on accounted paths only; add "
            f"{', '.join(missing)} or set the caps to 0 (docs/runbooks/gateway.md)"]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(setting: str, value: Any, rate_re: re.Pattern[str], size_re: re.Pattern[str], paths: Any) -> str:
    if value is UNKNOWN or (isinstance(value, str) and "{{" in value):
        return ""
    if setting == "rate":
        ok = value in ("", None) or (isinstance(value, str) and rate_re.fullmatch(value))
        return "" if ok else f"{str(value)[:40]!r} is not a rate like 10r/s or 30r/m (empty: no rate limit)"
    if setting in ("burst", "concurrent", "max_tokens"):
        # nginx's own bound on limit_conn; max_tokens: 0 is no cap
        most = {"concurrent": 65535, "burst": 1_000_000, "max_tokens": 100_000_000}[setting]
        ok = _whole(value) and 0 <= value <= most
        return "" if ok else f"{str(value)[:40]!r} is not a whole number 0-{most}"
    if setting == "max_body_size":
        ok = isinstance(value, (str, int)) and not isinstance(value, bool) and size_re.fullmatch(str(value))
        return "" if ok else f"{str(value)[:40]!r} is not an nginx size like 512k or 16m"
    if not (isinstance(value, list) and value):
        return "must be a non-empty list of paths of gateway_api_paths"
    if isinstance(paths, list):
        stray = [str(p)[:60] for p in value if p not in paths]
        if stray:
            return f"{', '.join(stray)} not in gateway_api_paths ({', '.join(map(str, paths))})"
    return ""
