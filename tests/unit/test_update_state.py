"""The update role's decision on a node, run by Ansible on this machine: which vLLM build the engine runs (read
from its unit), whether the node moves, and the record `enclave rollback` reads. Files a node holds are written
into a temporary tree; nothing is installed or started."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.unit.role_render import render

OLD, NEW = "a" * 40, "b" * 40
REPO = "org/model"
UNIT = '[Service]\nExecStart="/opt/enclave/vllm-{build}/bin/vllm" "serve" "/srv/enclave/models/org--model/current"\n'
DECISION = "{{ update_moves }} {{ update_running_version }} {{ update_target_version }}\n"
# The render play loads the roles' defaults and vars as vars_files, above inventory variables: each node's own
# settings are set as facts first, as the inventory's and the CLI's values would win on a real run.
NODE_SETTINGS = ["enclave_etc_dir", "enclave_models_dir", "update_engine_unit_file", "update_vllm_version",
                 "engine_vllm_version"]


def _node(root: Path, *, current: str, build: str, env_revision: str, record: dict | None = None) -> dict:
    etc, models = root / "etc", root / "models"
    (models / "org--model").mkdir(parents=True)
    etc.mkdir()
    (models / "org--model" / "current").symlink_to(current)
    (etc / "engine.env").write_text(f'ENCLAVE_MODEL_REVISION="{env_revision}"\n')
    (root / "unit").write_text(UNIT.format(build=build))
    if record:
        (etc / "update-previous.yml").write_text("# an earlier run\n" + yaml.safe_dump(record))
    return {"enclave_etc_dir": str(etc), "enclave_models_dir": str(models),
            "update_engine_unit_file": str(root / "unit")}


def test_a_node_moves_when_its_revision_or_build_differs_and_records_what_it_ran(tmp_path: Path) -> None:
    (tmp_path / "decision.j2").write_text(DECISION)
    settings = {k: f"{{{{ nodes[inventory_hostname].{k} | default('') }}}}" for k in NODE_SETTINGS}
    (tmp_path / "settings.yml").write_text(yaml.safe_dump([{"name": "Set this node's settings",
                                                            "ansible.builtin.set_fact": settings}]))
    hosts = {
        # revision and build move: the record keeps both old values
        "both": {**_node(tmp_path / "both", current=OLD, build="0.32.0+cpu", env_revision=OLD),
                 "update_vllm_version": "0.33.0"},
        # only the build moves
        "build": {**_node(tmp_path / "build", current=NEW, build="0.32.0+cpu", env_revision=NEW),
                  "update_vllm_version": "0.33.0"},
        # already there: a rerun moves nothing
        "there": {**_node(tmp_path / "there", current=NEW, build="0.33.0+cpu", env_revision=NEW),
                  "update_vllm_version": "0.33.0"},
        # no version given: the inventory's engine_vllm_version
        "inventory": {**_node(tmp_path / "inventory", current=NEW, build="0.32.0", env_revision=NEW),
                      "engine_vllm_version": "0.33.0"},
        # neither: the build it runs stays
        "keeps": _node(tmp_path / "keeps", current=NEW, build="0.32.0", env_revision=NEW),
        # an earlier run of this same move stopped after switching current: what it ran before that run is kept
        "retry": {**_node(tmp_path / "retry", current=NEW, build="0.32.0+cpu", env_revision=OLD, record={
            "before": {"revision": OLD, "vllm_version": "0.31.0"},
            "after": {"revision": NEW, "vllm_version": "0.33.0"}}), "update_vllm_version": "0.33.0"},
        # looks done, but an earlier update took it out and it never came back (it failed readiness): it moves, so
        # it proves it serves before it rejoins
        "failed": {**_node(tmp_path / "failed", current=NEW, build="0.33.0+cpu", env_revision=NEW),
                   "update_vllm_version": "0.33.0"},
        # done and drained by an operator: not the update's, it stays as it is
        "drained": {**_node(tmp_path / "drained", current=NEW, build="0.33.0+cpu", env_revision=NEW),
                    "update_vllm_version": "0.33.0"},
    }
    # The gateway's files (/etc/enclave on the gateway; read through the first node's settings here, where every
    # host has the same /etc/enclave).
    gateway_etc = Path(hosts["both"]["enclave_etc_dir"])
    (gateway_etc / "gateway-drained").write_text("# drained\nfailed\ndrained\n")
    (gateway_etc / "update-drained").write_text("# the update's\nfailed\n")
    plan = {"version": 1, "repo": REPO, "revision": OLD, "port": 8000,
            "replicas": [{"name": f"replica-{h}", "hosts": [h]} for h in hosts]}
    groups = {"enclave_nodes": {h: {} for h in hosts}, "enclave_gateway": {"gw": {}}}
    out = render(tmp_path, roles=["update"], groups=groups, hosts="enclave_nodes",
                 templates={"decision": str(tmp_path / "decision.j2"), "record": "update/update-previous.yml.j2"},
                 extra={"enclave_plan": plan, "update_revision": NEW, "nodes": hosts},
                 task_files=(str(tmp_path / "settings.yml"), "update/tasks/state.yml"))
    decision = {h: out[h]["decision"].split() for h in hosts}
    assert decision == {"both": ["True", "0.32.0", "0.33.0"], "build": ["True", "0.32.0", "0.33.0"],
                        "there": ["False", "0.33.0", "0.33.0"], "inventory": ["True", "0.32.0", "0.33.0"],
                        "keeps": ["False", "0.32.0", "0.32.0"], "retry": ["True", "0.32.0", "0.33.0"],
                        "failed": ["True", "0.33.0", "0.33.0"], "drained": ["False", "0.33.0", "0.33.0"]}
    records = {h: yaml.safe_load(out[h]["record"]) for h in hosts}
    assert out["both"]["record"].startswith("# Managed by enclave from templates/update/update-previous.yml.j2")
    assert records["both"] == {"before": {"revision": OLD, "vllm_version": "0.32.0"},
                               "after": {"revision": NEW, "vllm_version": "0.33.0"}}
    assert records["build"]["before"] == {"revision": NEW, "vllm_version": "0.32.0"}
    assert records["retry"]["before"] == {"revision": OLD, "vllm_version": "0.31.0"}
