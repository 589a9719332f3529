"""What a check expects of a host: the roles' defaults with the host's inventory variables on top, rendered."""

from __future__ import annotations

from typing import Any

import jinja2

from enclave.roles import SHARED_HOST_NAMES, role_data

__all__ = ["host_settings", "render", "role_data"]
_RENDER = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - not HTML


def host_settings(hostvars: dict[str, Any], *roles: str) -> dict[str, Any]:
    """Defaults of `enclave` and `roles`, the enclave role's shared on-host names (its vars), then the host's
    variables; simple Jinja references rendered."""
    merged: dict[str, Any] = {}
    for role in ("enclave", *roles):
        merged.update(role_data(role))
    merged.update({k: v for k, v in role_data("enclave", "vars").items() if k in SHARED_HOST_NAMES})
    merged.update({k: v for k, v in hostvars.items() if not k.startswith("ansible_")})
    return merged


def render(value: Any, settings: dict[str, Any]) -> Any:
    """`value` with its Jinja references resolved, references to references included (a few levels deep, as the
    roles nest them: engine_env_file -> enclave_engine_env_file -> enclave_etc_dir)."""
    for _ in range(5):
        if not (isinstance(value, str) and "{{" in value):
            break
        value = _RENDER.from_string(value).render(**settings)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [render(v, settings) for v in value]
    if isinstance(value, dict):
        return {k: render(v, settings) for k, v in value.items()}
    return value
