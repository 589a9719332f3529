"""What a check expects of a host: the roles' defaults with the host's inventory variables on top, rendered."""

from __future__ import annotations

from typing import Any

import jinja2
import yaml

from enclave import paths

_RENDER = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - not HTML


def role_data(role: str, kind: str = "defaults") -> dict[str, Any]:
    path = paths.roles_dir() / role / kind / "main.yml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    return data or {}


def host_settings(hostvars: dict[str, Any], *roles: str) -> dict[str, Any]:
    """Defaults of `enclave` and `roles`, then the host's variables; simple Jinja references rendered."""
    merged: dict[str, Any] = {}
    for role in ("enclave", *roles):
        merged.update(role_data(role))
    merged.update({k: v for k, v in hostvars.items() if not k.startswith("ansible_")})
    return merged


def render(value: Any, settings: dict[str, Any]) -> Any:
    if isinstance(value, str) and "{{" in value:
        return _RENDER.from_string(value).render(**settings)
    if isinstance(value, list):
        return [render(v, settings) for v in value]
    if isinstance(value, dict):
        return {k: render(v, settings) for k, v in value.items()}
    return value
