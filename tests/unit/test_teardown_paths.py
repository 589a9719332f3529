"""What teardown removes: the path rules (playbooks/filter_plugins/teardown.py) and the real task files run by a
local ansible-playbook on a scratch tree: the base role's directory tasks record what the kit created, the
teardown role's file tasks remove only that, keeping every parent of the models with --keep-weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from enclave import roles
from tests.unit.role_render import REPO, render

spec = importlib.util.spec_from_file_location("teardown_filters", REPO / "playbooks" / "filter_plugins" / "teardown.py")
assert spec and spec.loader
filters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(filters)
teardown_plan = filters.teardown_plan

DIRS = ["/srv/enclave", "/srv/enclave/models", "/opt/enclave", "/etc/enclave"]


def test_only_created_directories_go() -> None:
    plan = teardown_plan(["/srv/enclave", "/srv/enclave/models", "/opt", "/etc/enclave"],
                         ["/srv/enclave", "/srv/enclave/models", "/etc/enclave/"], [])
    assert plan == {"remove": ["/srv/enclave", "/etc/enclave"], "prune": [], "keep": [], "left": ["/opt"]}


def test_every_parent_of_nested_models_is_kept() -> None:
    dirs = ["/data/llm", "/data/llm/store/models", "/opt/enclave", "/etc/enclave"]
    plan = teardown_plan(dirs, dirs, ["/data/llm/store/models", "/etc/enclave/weights-allowed-signers"])
    assert plan["remove"] == ["/opt/enclave"]
    assert plan["prune"] == ["/data/llm", "/data/llm/store", "/etc/enclave"]
    assert {"/data/llm/store/models", "/data/llm/store", "/data/llm"} <= set(plan["keep"])


def test_models_outside_the_root_go_too_unless_kept() -> None:
    dirs = ["/srv/enclave", "/data/models", "/opt/enclave", "/etc/enclave"]
    assert "/data/models" in teardown_plan(dirs, dirs, [])["remove"]
    kept = teardown_plan(dirs, dirs, ["/data/models"])
    assert "/data/models" not in kept["remove"] and "/data/models" not in kept["prune"]


def tree(tmp: Path) -> dict[str, Path]:
    root = tmp / "host"
    return {"enclave_root": root / "srv" / "kit", "enclave_models_dir": root / "srv" / "kit" / "data" / "models",
            "enclave_opt_dir": root / "opt", "enclave_etc_dir": root / "etc" / "kit",
            "enclave_home": root / "home" / "kit"}


def run(tmp: Path, name: str, task_files: tuple[str, ...], dirs: dict[str, Path], **extra: object) -> None:
    render(tmp / name, roles=["base", "teardown"], groups={"enclave_nodes": {"n1": {}}}, templates={},
           task_files=task_files, extra={**{k: str(v) for k, v in dirs.items()},
                                         "enclave_user": "root", "enclave_group": "root", **extra})


def deploy(tmp: Path, dirs: dict[str, Path]) -> None:
    """The base role's directory tasks, then what later roles put inside."""
    run(tmp, "deploy", ("base/tasks/directories.yml",), dirs)
    (dirs["enclave_models_dir"] / "org--model" / "rev").mkdir(parents=True)
    (dirs["enclave_models_dir"] / "org--model" / "rev" / "model.safetensors").write_text("weights")
    (dirs["enclave_root"] / "weights-work").mkdir()
    (dirs["enclave_root"] / "data" / "scratch").mkdir()
    (dirs["enclave_opt_dir"] / "vllm-0.1").mkdir()
    (dirs["enclave_etc_dir"] / "engine.env").write_text("x")
    (dirs["enclave_etc_dir"] / "weights-allowed-signers").write_text("x")


def test_teardown_leaves_a_directory_that_was_there_before(tmp_path: Path) -> None:
    dirs = tree(tmp_path)
    (dirs["enclave_opt_dir"] / "other-vendor-app").mkdir(parents=True)  # `enclave_opt_dir: /opt`
    deploy(tmp_path, dirs)
    created = (dirs["enclave_etc_dir"] / "created-paths").read_text().split()
    assert str(dirs["enclave_opt_dir"]) not in created and str(dirs["enclave_root"]) in created

    run(tmp_path, "teardown", ("teardown/tasks/files.yml",), dirs, teardown_keep_weights=False)
    assert (dirs["enclave_opt_dir"] / "other-vendor-app").is_dir()
    assert not dirs["enclave_root"].exists() and not dirs["enclave_etc_dir"].exists()
    assert dirs["enclave_home"].is_dir()  # the service user's home stays (docs/runbooks/day2.md)


def test_keep_weights_keeps_models_nested_below_the_root(tmp_path: Path) -> None:
    dirs = tree(tmp_path)
    deploy(tmp_path, dirs)
    # The controller's pin of the signing key, beside each run's inventory: kept with the key, forgotten with it.
    pins = {name: tmp_path / name / "pki" / "weights-signer" for name in ("keep", "full")}
    for pin in pins.values():
        pin.parent.mkdir(parents=True)
        pin.write_text("SHA256:old\n")
    run(tmp_path, "keep", ("teardown/tasks/files.yml",), dirs, teardown_keep_weights=True)
    assert pins["keep"].read_text() == "SHA256:old\n"
    assert (dirs["enclave_models_dir"] / "org--model" / "rev" / "model.safetensors").read_text() == "weights"
    assert sorted(p.name for p in dirs["enclave_root"].iterdir()) == ["data"]
    assert sorted(p.name for p in (dirs["enclave_root"] / "data").iterdir()) == ["models"]
    assert sorted(p.name for p in dirs["enclave_etc_dir"].iterdir()) == ["created-paths", "weights-allowed-signers"]
    assert not dirs["enclave_opt_dir"].exists()

    run(tmp_path, "full", ("teardown/tasks/files.yml",), dirs, teardown_keep_weights=False)
    assert not dirs["enclave_root"].exists() and not dirs["enclave_etc_dir"].exists()
    assert not pins["full"].exists(), "a full teardown removed the signing key but kept its pin"


def test_every_unit_the_kit_writes_is_one_teardown_removes() -> None:
    import yaml

    written = {p.name.removesuffix(".j2") for pattern in ("enclave-*.service.j2", "enclave-*.timer.j2")
               for p in (REPO / "templates").rglob(pattern)}
    assert {"enclave-engine.service", "enclave-signals.timer"} <= written  # the scan sees the units
    listed = yaml.safe_load((REPO / "playbooks/roles/teardown/vars/main.yml").read_text())["teardown_units"]
    # the engine's unit is named once, in the enclave role's vars, and referenced by teardown
    removed = {roles.host_name("enclave_engine_unit") if u == "{{ enclave_engine_unit }}" else u for u in listed}
    assert written <= removed, f"units teardown would leave running: {sorted(written - removed)}"
