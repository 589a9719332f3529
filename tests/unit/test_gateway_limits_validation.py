"""Per-client limits that cannot work are refused on the controller, before any host is touched: exit 2 and one
line naming the gateway host, the variable and the client (src/enclave/plan/limits.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.offline_cli import SECRETS
from tests.unit.test_validation_holes import _deploy, inventory, runs  # noqa: F401 - fixtures

LIMITED = {**SECRETS, "gateway_api_keys": {"team-a": "t" * 32, "batch": "b" * 32}}


@pytest.mark.parametrize(("settings", "said"), [
    ({"gateway_client_rate": "10 per second"},
     "host 'gw01': gateway_client_rate: '10 per second' is not a rate like 10r/s or 30r/m"),
    ({"gateway_client_burst": -1}, "host 'gw01': gateway_client_burst: '-1' is not a whole number"),
    ({"gateway_max_body_size": "16 MB"}, "host 'gw01': gateway_max_body_size: '16 MB' is not an nginx size"),
    ({"gateway_client_limits": {"bacth": {"rate": "1r/s"}}},
     "host 'gw01': gateway_client_limits entry 'bacth': not a client of gateway_api_keys (clients: batch, team-a)"),
    ({"gateway_client_limits": {"batch": {"rps": 5}}},
     "host 'gw01': gateway_client_limits entry 'batch': unknown setting 'rps' (one of rate, burst, concurrent"),
    ({"gateway_client_limits": {"batch": {"rate": "5r/h"}}},
     "host 'gw01': gateway_client_limits entry 'batch' rate: '5r/h' is not a rate"),
    ({"gateway_client_concurrent": 65536},
     "host 'gw01': gateway_client_concurrent: '65536' is not a whole number 0-65535"),
    ({"gateway_client_limits": {"batch": {"concurrent": "lots"}}},
     "host 'gw01': gateway_client_limits entry 'batch' concurrent: 'lots' is not a whole number"),
    ({"gateway_client_limits": {"batch": {"endpoints": ["/v1/completions", "/v1/score"]}}},
     "host 'gw01': gateway_client_limits entry 'batch' endpoints: /v1/score not in gateway_api_paths"),
    ({"gateway_client_limits": {"batch": {"endpoints": []}}},
     "host 'gw01': gateway_client_limits entry 'batch' endpoints: must be a non-empty list"),
    ({"gateway_client_limits": {"batch": "slow"}},
     "host 'gw01': gateway_client_limits entry 'batch': must be a mapping"),
    ({"gateway_usage_max_body_size": "lots"}, "host 'gw01': gateway_usage_max_body_size: 'lots' is not an nginx size"),
    ({"gateway_usage_paths": ["/v1/chat/completions", "/v1/responses"]},
     "host 'gw01': gateway_usage_paths: /v1/responses not in gateway_api_paths"),
    ({"gateway_client_max_tokens": -1},
     "host 'gw01': gateway_client_max_tokens: '-1' is not a whole number 0-100000000"),
    ({"gateway_client_max_tokens": "4k"}, "host 'gw01': gateway_client_max_tokens: '4k' is not a whole number"),
    ({"gateway_client_limits": {"batch": {"max_tokens": 1.5}}},
     "host 'gw01': gateway_client_limits entry 'batch' max_tokens: '1.5' is not a whole number"),
    ({"gateway_client_limits": {"batch": {"max_tokens": True}}},
     "host 'gw01': gateway_client_limits entry 'batch' max_tokens: 'True' is not a whole number"),
    # A cap is enforced where the body is read: a completion path left unaccounted would be bounded by nothing.
    ({"gateway_client_limits": {"batch": {"max_tokens": 512}}, "gateway_usage_paths": ["/v1/chat/completions"]},
     "host 'gw01': gateway_usage_paths: a max_tokens cap is enforced on accounted paths only; add /v1/completions"),
])
def test_bad_limits_touch_no_host(runs: list[object], inventory: Path, settings: dict[str, Any],  # noqa: F811
                                  said: str) -> None:
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(yaml.safe_dump({**LIMITED, **settings}))
    result = _deploy(inventory)
    assert result.exit_code == 2, result.output
    assert runs == []  # no ansible-playbook run started
    assert said in " ".join(result.output.split()) and "Traceback" not in result.output
    assert "b" * 32 not in result.output  # a key never reaches the output


def test_good_limits_pass(runs: list[object], inventory: Path) -> None:  # noqa: F811
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(yaml.safe_dump({
        **LIMITED, "gateway_client_rate": "30r/m", "gateway_client_concurrent": 0, "gateway_client_max_tokens": 4096,
        "gateway_client_limits": {"batch": {"rate": "", "burst": 5, "max_body_size": "1m", "max_tokens": 0,
                                            "endpoints": ["/v1/completions"]}}}))
    result = _deploy(inventory)
    assert result.exit_code == 0, result.output
    assert len(runs) == 1


def test_the_sandbox_inventory_limits_one_client_and_passes_the_checks(tmp_path: Path) -> None:
    """The sandbox's generated gateway.yml has a low-rate client (the integration test floods it) that the
    controller's checks accept, and keeps earlier keys across `sandbox up`s."""
    from enclave import paths
    from enclave.plan import limits
    from enclave.sandbox import client_keys as sandbox

    sandbox.write_gateway_vars(tmp_path)
    first = sandbox.read_gateway_keys(tmp_path)
    path = sandbox.write_gateway_vars(tmp_path)
    again = {**yaml.safe_load(path.read_text()),
             **yaml.safe_load((tmp_path / "group_vars" / "enclave_gateway" / "api_keys.yml").read_text())}
    assert again["gateway_api_keys"] == first and set(first) == set(sandbox.CLIENTS)
    assert path.stat().st_mode & 0o077 == 0
    assert set(again["gateway_client_limits"]) <= set(again["gateway_api_keys"])
    assert again["gateway_client_limits"]["sandbox-limited"]["rate"] == "1r/s"
    roles = paths.roles_dir()
    rules = yaml.safe_load((roles / "gateway" / "vars" / "main.yml").read_text())
    defaults = yaml.safe_load((roles / "gateway" / "defaults" / "main.yml").read_text())
    assert limits.check_client_limits("gw", lambda name: again.get(name, defaults.get(name)), rules) == []


def test_verify_checks_with_a_client_that_has_no_limits_of_its_own() -> None:
    from enclave.checks.test_gateway import checking_client

    keys = {"a-narrow": "k1", "b-free": "k2", "c-free": "k3"}
    assert checking_client(keys, {"a-narrow": {"endpoints": ["/v1/embeddings"]}}) == "b-free"
    assert checking_client(keys, {}) == "a-narrow"
    assert checking_client(keys, None) == "a-narrow"
    assert checking_client({"only": "k"}, {"only": {"rate": "1r/m"}}) == "only"  # no other: still checked


def _role_checks(tmp_path: Path, settings: dict[str, Any]) -> tuple[int, str]:
    """The gateway role's own checks (tasks/validate.yml, for plain ansible-playbook runs) on `settings`."""
    from tests.unit.role_render import run_play

    tmp_path.mkdir(parents=True)
    groups = {"enclave_nodes": {"n1": {"ansible_host": "127.0.0.11"}},
              "enclave_gateway": {"gw": {"ansible_host": "127.0.0.10"}}}
    proc = run_play(tmp_path, roles=["gateway"], groups=groups, hosts="enclave_gateway",
                    task_files=("gateway/tasks/validate.yml",),
                    extra={"enclave_private_network": "127.0.0.0/8", "gateway_engine_api_key": "e" * 30,
                           "gateway_api_keys": {"batch": "b" * 32}, **settings})
    return proc.returncode, " ".join(proc.stdout.split())


def test_the_roles_own_checks_hold_max_tokens_to_the_same_rules(tmp_path: Path) -> None:
    good = {"gateway_client_max_tokens": 4096, "gateway_client_limits": {"batch": {"max_tokens": 0}}}
    assert _role_checks(tmp_path / "good", good)[0] == 0
    for i, (settings, said) in enumerate((
            ({"gateway_client_max_tokens": -1}, "gateway_client_max_tokens whole numbers"),
            ({"gateway_client_limits": {"batch": {"max_tokens": "lots"}}}, "whole max_tokens up to 100000000"),
            ({"gateway_client_max_tokens": 512, "gateway_usage_paths": ["/v1/chat/completions"]},
             "add /v1/completions to gateway_usage_paths"))):
        code, output = _role_checks(tmp_path / f"bad{i}", settings)
        assert code != 0 and said in output, output[-2000:]
