"""Malformed inputs across the verbs (issue #14, finding 9): each exits 2 with one line that names the file, key or
host, prints no traceback and starts no run on any host.

Each row builds its input from a finished inventory (the shipped example, a pinned revision, its secrets) and runs
the CLI through Typer's CliRunner. The playbook runs, fact gathering and host checks are replaced by a recorder that
fails the row if any is reached; the SSH probe answers for every host, so a row fails on its input, not the network.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from enclave.cli import app
from enclave.plan.inventory import MAX_FILE_BYTES
from tests.unit.offline_cli import REV, SECRETS, SHIPPED, write_secrets

runner = CliRunner()
BINARY = bytes(range(256)) * 64
BOMB = "\n".join(['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)])

# A row: (verb and arguments, with {inv} the inventory and {tmp} a scratch dir; how to break the input; what the
# one line must name). `breaks` edits the inventory or writes files under tmp before the command runs.
Breaker = Callable[[Path, Path], None]


def _hosts(edit: Callable[[dict], None]) -> Breaker:
    def breaker(inv: Path, _tmp: Path) -> None:
        data = yaml.safe_load((inv / "hosts.yml").read_text())
        edit(data)
        (inv / "hosts.yml").write_text(yaml.safe_dump(data))
    return breaker


def _group_vars(name: str, text: str | bytes) -> Breaker:
    def breaker(inv: Path, _tmp: Path) -> None:
        path = inv / "group_vars" / "all" / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return breaker


def _file(name: str, content: str | bytes) -> Breaker:
    def breaker(_inv: Path, tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return breaker


def _nothing(_inv: Path, _tmp: Path) -> None:
    pass


def _set(group: str, host: str, **hostvars: object) -> Breaker:
    return _hosts(lambda d: d["all"]["children"][group]["hosts"][host].update(hostvars))


def _secrets(**changed: object) -> Breaker:
    settings = {k: v for k, v in {**SECRETS, **changed}.items() if v is not None}
    return _group_vars("secrets.yml", yaml.safe_dump(settings))


def _nodes(value: object) -> Breaker:
    return _hosts(lambda d: d["all"]["children"]["enclave_nodes"].update(hosts=value))


ROWS: list[tuple[str, Breaker, str]] = [
    # the inventory's shape
    ("deploy -i {inv}", _nodes(["gpu01", "gpu02"]), "hosts.yml: 'hosts' of group 'enclave_nodes' must be a mapping"),
    ("plan -i {inv}", _hosts(lambda d: d["all"].update(children=["enclave_nodes"])),
     "hosts.yml: 'children' of group 'all' must be a mapping"),
    ("verify -i {inv}", _hosts(lambda d: d["all"].update(vars=["ansible_user"])),
     "hosts.yml: 'vars' of group 'all' must be a mapping"),
    ("teardown -i {inv} --yes", _hosts(lambda d: d["all"]["children"].update(enclave_nodes=["gpu01", "gpu02"])),
     "hosts.yml: group 'enclave_nodes' must be a mapping (hosts, vars, children), got list"),
    ("update -i {inv}", lambda inv, _t: (inv / "hosts.yml").write_text("- gpu01\n- gpu02\n"),
     "hosts.yml: expected a mapping of groups, got list"),
    ("drain gpu01 -i {inv}", lambda inv, _t: (inv / "hosts.yml").write_text("all: {children: {a: [\n"),
     "hosts.yml:2:1: invalid YAML"),
    ("weights status -i {inv}", _nodes({"gpu01": {"ansible_port": "ssh"}}),
     "host 'gpu01': ansible_port must be a TCP port (1-65535), got 'ssh'"),
    ("teardown -i {inv} --yes", _set("enclave_gateway", "gw01", ansible_port=70000),
     "host 'gw01': ansible_port must be a TCP port (1-65535), got 70000"),
    ("deploy -i {inv}", _set("enclave_nodes", "gpu02", ansible_ssh_port=[22]),
     "host 'gpu02': ansible_ssh_port must be a TCP port"),
    ("plan -i {inv}", _group_vars("broken.yml", "enclave_model: [\n"), "broken.yml:2:1: invalid YAML"),
    ("verify -i {inv}", _group_vars("list.yml", "- enclave_model\n"),
     "list.yml: expected a mapping of variables, got list"),
    ("deploy -i {inv}", _group_vars("big.yml", "# padding\n" * (MAX_FILE_BYTES // 10 + 1)),
     f"big.yml: {10 * (MAX_FILE_BYTES // 10 + 1)} bytes; an inventory file is at most {MAX_FILE_BYTES} bytes"),
    ("plan -i {inv}", _group_vars("bomb.yml", BOMB), "bomb.yml: more than 200000 values once its YAML aliases"),
    ("teardown -i {inv} --yes", _group_vars("blob.yml", BINARY), "blob.yml: a binary file, not YAML or text"),
    ("drain gpu01 -i {inv}", _hosts(lambda d: d["all"]["children"].pop("enclave_staging")),
     "group 'enclave_staging' (the one host that fetches weights) is missing"),
    ("deploy -i {tmp}/nowhere", _nothing, "nowhere: no such inventory file or directory"),
    # variables
    ("update -i {inv}", _group_vars("typo.yml", "enclave_modle: x\n"),
     "typo.yml: unknown variable 'enclave_modle' in group 'all' (did you mean 'enclave_model'?)"),
    ("weights status -i {inv}", _group_vars("revision.yml", "enclave_model_revision: main\n"),
     "revision.yml: enclave_model_revision in group 'all' must be a 40-hex commit id"),
    ("deploy -i {inv}", _group_vars("model.yml", "enclave_model: ../../outside\n"),
     "model.yml: enclave_model in group 'all' must be a model profile name"),
    ("plan -i {inv}", _group_vars("model.yml", "enclave_model: /etc/passwd\n"),
     "model.yml: enclave_model in group 'all' must be a model profile name"),
    ("verify -i {inv}", _group_vars("network.yml", "enclave_private_network: 10.40.0/33\n"),
     "network.yml: enclave_private_network in group 'all' is not a CIDR"),
    ("drain gpu01 -i {inv}", _group_vars("internal.yml", "engine_unit: x.service\n"),
     "internal.yml: group 'all' sets 'engine_unit', which the kit sets itself"),
    ("deploy -i {inv}", _secrets(engine_api_key="short"),
     "hosts 'gpu01', 'gpu02': engine_api_key is missing, shorter than 16 characters"),
    ("deploy -i {inv}", _secrets(gateway_api_keys=None), "host 'gw01': gateway_api_keys is empty"),
    ("weights fetch -i {inv}", _secrets(weights_source={"type": "ftp"}),
     "host 'gw01': weights_source must be"),
    # -e
    ("deploy -i {inv} -e @{tmp}/blob", _file("blob", BINARY), "--extra-vars @{tmp}/blob: a binary file"),
    ("deploy -i {inv} -e @{tmp}/missing.yml", _nothing, "--extra-vars @{tmp}/missing.yml: cannot read it"),
    ("deploy -i {inv} -e @{tmp}/list.yml", _file("list.yml", "- a\n"), "--extra-vars '@"),
    ("deploy -i {inv} -e @{tmp}/bad.yml", _file("bad.yml", "a: [\n"), "--extra-vars @{tmp}/bad.yml:2:1: invalid"),
    ("deploy -i {inv} -e @{tmp}/bomb.yml", _file("bomb.yml", BOMB), "bomb.yml: more than 200000 values"),
    ("deploy -i {inv} -e enclave_modle=x", _nothing, "unknown variable 'enclave_modle' in -e (did you mean"),
    ("weights sync -i {inv} -e weights_kepe=2", _nothing, "unknown variable 'weights_kepe' in -e (did you mean"),
    ("deploy -i {inv} -e enclave_model=../x", _nothing, "enclave_model in -e must be a model profile name"),
    ("deploy -i {inv} -e enclave_model_revision=main", _nothing, "enclave_model_revision in -e must be a 40-hex"),
    ("deploy -i {inv} -e {{bad", _nothing, "--extra-vars: not valid JSON"),
    ("deploy -i {inv} -e novalue", _nothing, "--extra-vars 'novalue': expected KEY=VALUE"),
    ("deploy -i {inv} --vault-password-file {tmp}/nopass", _nothing, "--vault-password-file {tmp}/nopass: no such"),
    # arguments of the day-2 verbs
    ("update -i {inv} --model-revision main", _nothing, "--model-revision must be a 40-hex commit id"),
    ("update -i {inv} --model-revision ../etc", _nothing, "--model-revision must be a 40-hex commit id"),
    ("update -i {inv} --serial 0", _nothing, "--serial '0'"),
    ("update -i {inv} --max-fail 200%", _nothing, "--max-fail '200%'"),
    ("update -i {inv} --vllm-version latest", _nothing, "--vllm-version 'latest'"),
    ("drain nosuchhost -i {inv}", _nothing, "no host 'nosuchhost' in enclave_nodes (nodes: gpu01, gpu02)"),
    ("drain gw01 -i {inv}", _nothing, "no host 'gw01' in enclave_nodes"),
    ("plan -i {inv} --facts {tmp}/facts.bin", _file("facts.bin", BINARY), "--facts {tmp}/facts.bin"),
    ("plan -i {inv} --facts {tmp}/facts.json", _file("facts.json", "[1, 2]"), "--facts {tmp}/facts.json: expected"),
    # weights pack / import (no inventory for pack)
    (f"weights pack --repo org/m --revision {REV} --source {{tmp}}/model --out {{tmp}}/out",
     _file("model/config.json", "{}"), "model has no LICENSE"),
    (f"weights pack --repo org/m --revision {REV} --out {{tmp}}/out --endpoint http://127.0.0.1:9", _nothing,
     "cannot reach http://127.0.0.1:9"),
    (f"weights pack --repo org/m --revision {REV} --source {{tmp}}/none --out {{tmp}}/out", _nothing,
     "--source {tmp}/none: not a directory"),
    (f"weights pack --repo nonsense --revision {REV} --out {{tmp}}/out", _nothing, "--repo 'nonsense'"),
    ("weights pack --repo org/m --revision ../x --out {tmp}/out", _nothing, "--revision must be a 40-hex commit id"),
    (f"weights pack --repo org/m --revision {REV} --split-gb 0 --out {{tmp}}/out", _nothing, "--split-gb"),
    ("weights import {tmp}/nobundle -i {inv}", _file("nobundle/x", "x"), "nobundle: no BUNDLE.json"),
    # mirror
    ("mirror publish {tmp}/root --repo org/m --from {tmp}/none", _nothing, "{tmp}/none: not a directory"),
    ("mirror publish {tmp}/root --repo nonsense --from {tmp}", _nothing, "nonsense"),
    ("mirror serve {tmp}/noroot", _nothing, "{tmp}/noroot: the mirror root is not a directory"),
    ("mirror serve {tmp} --token-file {tmp}/token", _file("token", BINARY), "{tmp}/token: the token file is not"),
    ("mirror serve {tmp} --token-file {tmp}/none", _nothing, "{tmp}/none: cannot read the token file"),
]


@pytest.fixture
def started(isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What reached a host: any playbook run, fact gathering or host check appends to it (and fails the row)."""
    from enclave.cli import deploy, drain, plan, results, teardown, update, verify, weights
    from enclave.runner import collect, inventory

    reached: list[str] = []

    def recorder(name: str) -> Callable[..., object]:
        def record(*args: object, **kwargs: object) -> object:
            reached.append(name)
            raise AssertionError(f"{name} reached a host")
        return record

    for module in (deploy, drain, teardown, update, weights):
        monkeypatch.setattr(module, "run_with_progress", recorder(f"{module.__name__}.run_with_progress"))
    monkeypatch.setattr(deploy, "gather", recorder("deploy.gather"))
    monkeypatch.setattr(plan, "gather", recorder("plan.gather"))
    monkeypatch.setattr(collect, "run_playbook", recorder("collect.run_playbook"))  # every cluster read
    monkeypatch.setattr(weights, "run_checks", recorder("weights.run_checks"))
    monkeypatch.setattr(verify, "run_checks", recorder("verify.run_checks"))
    monkeypatch.setattr(results, "run_checks", recorder("results.run_checks"))
    monkeypatch.setattr(inventory, "probe_ssh", lambda *args, **kwargs: None)  # every host answers SSH
    return reached


@pytest.mark.parametrize(("command", "breaks", "names"), ROWS, ids=[f"{i:02d}-{r[0].split(' -')[0]}"
                                                                      for i, r in enumerate(ROWS)])
def test_malformed_input_exits_2_with_one_line(started: list[str], tmp_path: Path, command: str, breaks: Breaker,
                                                names: str) -> None:
    inv = tmp_path / "inv"
    shutil.copytree(SHIPPED, inv)
    (inv / "group_vars" / "all" / "revision.yml").write_text(f"enclave_model_revision: {REV}\n")
    write_secrets(inv)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    breaks(inv, scratch)
    args = [a.format(inv=inv, tmp=scratch) for a in command.split(" ")]
    result = runner.invoke(app, args, env={"COLUMNS": "2000"})
    output = result.output
    assert "Traceback" not in output and not isinstance(result.exception, AssertionError), output
    assert result.exit_code == 2, output
    assert started == []
    assert names.format(tmp=scratch) in output, output
    # one line says it: the error's name, then what and where
    [line] = [ln for ln in output.splitlines() if names.format(tmp=scratch) in ln]
    assert re.match(r"[A-Z]\w*Error: ", line), output
    if command.startswith("weights pack"):
        assert not (scratch / "out").exists()  # a failed pack leaves nothing, not even a .partial
