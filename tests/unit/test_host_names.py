"""The on-host names several roles, the checks and the CLI share are defined once, in the enclave role's vars: no
role, template or Python module spells them again, and what the checks render from the roles is what Ansible
writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.checks.settings import host_settings, render, role_data
from enclave.roles import host_name

REPO = Path(__file__).resolve().parents[2]
SHARED = role_data("enclave", "vars")
# The literal each shared name holds, as it would be spelled by a copy.
LITERALS = {"enclave_engine_unit": "enclave-engine.service", "enclave_engine_env_file": "/engine.env",
            "enclave_drained_file": "/gateway-drained", "enclave_tool_dir": "/tools"}


def _places() -> list[Path]:
    files = [*(REPO / "playbooks").rglob("*.yml"), *(REPO / "templates").rglob("*.j2"),
             *(REPO / "src" / "enclave").rglob("*.py")]
    return [f for f in files if f != REPO / "playbooks/roles/enclave/vars/main.yml"]


@pytest.mark.parametrize("name", sorted(LITERALS))
def test_each_shared_name_is_spelled_only_in_the_enclave_roles_vars(name: str) -> None:
    assert LITERALS[name] in SHARED[name]
    spelled = []
    for path in _places():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if path.suffix != ".py" else line
            if LITERALS[name] in code and not line.lstrip().startswith(("#", '"""')) and " src:" not in line:
                spelled.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert spelled == [], "\n".join(spelled)


def test_the_checks_render_the_roles_names_through_the_shared_ones() -> None:
    settings = host_settings({}, "engine")
    engine_vars = role_data("engine", "vars")
    assert render(engine_vars["engine_env_file"], settings) == "/etc/enclave/engine.env"
    assert render(engine_vars["engine_unit"], settings) == host_name("enclave_engine_unit") == "enclave-engine.service"
    weights = host_settings({"enclave_opt_dir": "/srv/kit"}, "weights")
    assert render(role_data("weights", "vars")["weights_tool_dir"], weights) == "/srv/kit/tools/hosttools"


def test_host_name_refuses_a_templated_value() -> None:
    with pytest.raises(ValueError, match="enclave_engine_env_file is not a plain name"):
        host_name("enclave_engine_env_file")
