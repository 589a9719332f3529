"""The roles' own data files read on the controller, so the Python side takes the names the roles define instead of
spelling them again (the checks, teardown's summary)."""

from __future__ import annotations

from typing import Any

import yaml

from enclave import paths

# The on-host names the enclave role's vars define for every role (its other vars need Ansible to render).
SHARED_HOST_NAMES = ("enclave_engine_unit", "enclave_engine_env_file", "enclave_drained_file", "enclave_tool_dir",
                     "enclave_hosttools_dir")


def role_data(role: str, kind: str = "defaults") -> dict[str, Any]:
    """`roles/<role>/<kind>/main.yml` as written (Jinja unrendered); {} when the file does not exist."""
    path = paths.roles_dir() / role / kind / "main.yml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    return data or {}


def host_name(key: str) -> str:
    """A plain on-host name the enclave role's vars define once (enclave_engine_unit, ...)."""
    value = role_data("enclave", "vars")[key]
    if not isinstance(value, str) or "{{" in value:
        raise ValueError(f"roles/enclave/vars/main.yml: {key} is not a plain name: {value!r}")
    return value
