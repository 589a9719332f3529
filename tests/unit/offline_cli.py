"""What the CLI tests share: the shipped 2x8xH200 example inventory as an operator finishes it, facts for its hosts
around recorded nvidia-smi output, and verbs run offline (inventory validation without the SSH probe, the playbook
run recorded instead of started)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

from enclave import audit, paths
from enclave.cli import common
from enclave.runner.inventory import validate
from tests.unit.recorded_facts import h200_node, host

SHIPPED = paths.share_dir() / "inventory" / "h200-cluster"
REV = "0123456789abcdef0123456789abcdef01234567"
# What a deploy cannot go without, checked before any host is touched (enclave.plan.settings); vaulted on a real site.
SECRETS = {"engine_api_key": "e" * 32, "gateway_api_keys": {"team-a": "t" * 32},
           "weights_source": {"type": "hf", "endpoint": "http://hub.example.internal"}}


def write_secrets(inventory_dir: Path) -> None:
    (inventory_dir / "group_vars" / "all" / "secrets.yml").write_text(yaml.safe_dump(SECRETS))


def finished_example(tmp_path: Path) -> Path:
    """A copy of the example (plan writes beside it) with the revision the operator vetted and the secrets."""
    copy = tmp_path / "h200-cluster"
    shutil.copytree(SHIPPED, copy)
    (copy / "group_vars" / "all" / "revision.yml").write_text(f"enclave_model_revision: {REV}\n")
    write_secrets(copy)
    return copy


def write_facts(tmp_path: Path, **gpu02: object) -> Path:
    facts = {"gpu01": h200_node("10.40.0.11/24"), "gpu02": h200_node(**{"address": "10.40.0.12/24", **gpu02}),
             "gw01": host(address="10.40.0.10/24", free_gb=900)}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    return path


class Runs(list[Any]):
    """The playbook runs a verb asked for (their requests) and their progress titles, in order; each run ends with
    `exit_code` (a test sets it to make the run fail)."""

    exit_code = 0

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []


def offline_runs(monkeypatch: pytest.MonkeyPatch, verb: ModuleType, *, run_id: str | None = None) -> Runs:
    """Inventories validated without the SSH probe (every verb's, in cli.common) and the playbook runs of `verb`
    (a CLI verb module) recorded, each noting `run_id` in the audit trail as a real run notes its own."""
    runs = Runs()

    def run(request: Any, *args: Any, title: str = "", **kwargs: Any) -> Any:
        runs.append(request)
        runs.titles.append(title)
        if run_id is not None:
            audit.note_run(run_id)
        return SimpleNamespace(exit_code=runs.exit_code)

    monkeypatch.setattr(common, "validate", lambda path, **kw: validate(path, **{**kw, "reachable": False}))
    monkeypatch.setattr(verb, "run_with_progress", run)
    return runs


def offline_deploy(monkeypatch: pytest.MonkeyPatch, facts: Path) -> Runs:
    """deploy run offline, with facts from a recording and the short verify after it left out."""
    from enclave.cli import deploy as deploy_cli
    from enclave.plan.gather import load_recorded

    runs = offline_runs(monkeypatch, deploy_cli)
    monkeypatch.setattr(deploy_cli, "gather", lambda path: load_recorded(facts))
    # the checks after a successful run have their own tests (test_cli_deploy_verify.py)
    monkeypatch.setattr(deploy_cli, "short_verify", lambda *args, **kwargs: 0)
    return runs
