"""`enclave teardown`: warns first, runs only after a typed confirmation (or --yes), asks for the right playbook.
The playbook run is replaced at its boundary; the inventory is the shipped example, validated for real."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from enclave.cli import app, common
from enclave.cli import teardown as teardown_cli
from enclave.cli.teardown import inventory_name, teardown_request
from enclave.runner.inventory import validate
from tests.unit.offline_cli import SHIPPED

runner = CliRunner()


@pytest.fixture
def example(tmp_path: Path) -> Path:
    copy = tmp_path / "h200-cluster"
    shutil.copytree(SHIPPED, copy)
    return copy


@pytest.fixture
def runs(isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every playbook run teardown asks for (none runs); inventory validation without the SSH probe."""
    seen: list[Any] = []

    def run(request: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(request)
        return type("Result", (), {"exit_code": 0})()

    monkeypatch.setattr(teardown_cli, "run_with_progress", run)
    monkeypatch.setattr(common, "validate", functools.partial(validate, reachable=False))
    return seen


@pytest.mark.parametrize("answer", ["h200-cluster", "teardown", " teardown "])
def test_the_inventory_name_or_the_word_confirms(runs: list[Any], example: Path, answer: str) -> None:
    result = runner.invoke(app, ["teardown", "-i", str(example)], input=answer + "\n")
    assert result.exit_code == 0, result.output
    assert [r.playbook for r in runs] == ["teardown.yml"]
    assert dict(runs[0].extra_vars) == {"teardown_keep_weights": False}


@pytest.mark.parametrize("answer", ["", "yes", "y", "prod", "TEARDOWN"])
def test_anything_else_changes_nothing(runs: list[Any], example: Path, answer: str) -> None:
    result = runner.invoke(app, ["teardown", "-i", str(example)], input=answer + "\n")
    assert result.exit_code == 2
    assert "teardown not confirmed" in result.output and "nothing was changed" in result.output
    assert runs == []


def test_it_warns_before_asking_and_names_the_hosts(runs: list[Any], example: Path) -> None:
    result = runner.invoke(app, ["teardown", "-i", str(example)], input="no\n")
    warning, _, prompt = result.output.partition("type the inventory's name (h200-cluster)")
    assert prompt, result.output
    for words in ["enclave-engine.service", "gpu01", "nginx", "inet enclave", "/srv/enclave/models: DELETED",
                  "enclave-weights-seed.service", "/etc/enclave"]:
        assert words in warning


def test_yes_skips_the_question_and_keep_weights_reaches_the_playbook(runs: list[Any], example: Path) -> None:
    result = runner.invoke(app, ["teardown", "-i", str(example), "--yes", "--keep-weights"])
    assert result.exit_code == 0, result.output
    assert "type the inventory's name" not in result.output
    assert "/srv/enclave/models: kept" in result.output
    assert dict(runs[0].extra_vars) == {"teardown_keep_weights": True}


def test_a_bad_inventory_stops_before_the_question(runs: list[Any], tmp_path: Path) -> None:
    bad = tmp_path / "broken.yml"
    bad.write_text("all: [unclosed\n")
    result = runner.invoke(app, ["teardown", "-i", str(bad)], input="teardown\n")
    assert result.exit_code == 2 and runs == []
    assert "broken.yml" in result.output


@pytest.mark.parametrize(("path", "name"), [
    ("inventory/prod/hosts.yml", "prod"),
    ("inventory/staging.yml", "staging"),
    ("/var/state/sandbox/td/inventory/hosts.yml", "td"),
    ("hosts", "teardown"),
])
def test_inventory_name(path: str, name: str) -> None:
    assert inventory_name(Path(path)) == name


def test_the_request_is_the_teardown_playbook(tmp_path: Path) -> None:
    request = teardown_request(tmp_path / "hosts.yml", keep_weights=True)
    assert request.playbook == "teardown.yml" and request.extra_vars["teardown_keep_weights"] is True
    assert (Path(__file__).resolve().parents[2] / "playbooks" / request.playbook).is_file()


def test_the_warning_names_the_inventorys_own_paths(runs: list[Any], example: Path) -> None:
    (example / "group_vars" / "all" / "paths.yml").write_text(
        "enclave_root: /data/llm\nenclave_models_dir: '{{ enclave_root }}/store/models'\n"
        "enclave_opt_dir: /opt/acme-enclave\n")
    (example / "host_vars").mkdir(exist_ok=True)
    (example / "host_vars" / "gpu02.yml").write_text("enclave_etc_dir: /etc/enclave-b\n")
    result = runner.invoke(app, ["teardown", "-i", str(example)], input="no\n")
    warning = result.output.partition("type the inventory's name")[0]
    assert "/data/llm/store/models: DELETED" in warning and "/opt/acme-enclave" in warning
    assert "/etc/enclave-b (on gpu02)" in warning and "/etc/enclave (on gpu01, gw01)" in warning
    assert "/srv/enclave" not in warning and "/opt/enclave," not in warning
