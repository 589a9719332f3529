"""The supply chain's pins (issue #14, finding 3): a hash lock served by the same server as its wheels is trusted
only by the sha256 the inventory pins. Validation refuses a malformed or missing pin before any host is touched;
the roles' own lock checks, run by Ansible against a local web server, refuse a swapped lock naming the URL and
both digests and write nothing; the sandbox pins digests it computed itself; the hub fetch runs as its own user."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.sandbox import engine_settings as engine_sandbox
from enclave.sandbox import hub
from tests.unit.offline_cli import SECRETS
from tests.unit.role_render import ROLES, run_play
from tests.unit.test_engine_wheelhouse import make_wheel
from tests.unit.test_validation_holes import _deploy, inventory, runs  # noqa: F401 - fixtures

GOOD = "a" * 64
LOCK = "pkg==1.0 --hash=sha256:" + "1" * 64 + "\nother==2.0 --hash=sha256:" + "2" * 64 + "\n"


def _settings(inventory: Path, **values: Any) -> None:  # noqa: F811 - the fixture's name
    """The shipped example's secrets and sources, with `values` over them (None removes a variable)."""
    sources = inventory / "group_vars" / "all" / "sources.yml"
    data = yaml.safe_load(sources.read_text())
    for name, value in values.items():
        data.pop(name, None)
        if value is not None:
            data[name] = value
    sources.write_text(yaml.safe_dump(data))
    (inventory / "group_vars" / "all" / "secrets.yml").write_text(yaml.safe_dump(SECRETS))


@pytest.mark.parametrize(("values", "said"), [
    ({"engine_wheelhouse_lock_sha256": "abc"},
     "hosts 'gpu01', 'gpu02': engine_wheelhouse_lock_sha256 'abc' is not a sha256 (64 lowercase hex digits"),
    ({"engine_wheelhouse_lock_sha256": "A" * 64}, "engine_wheelhouse_lock_sha256 'AAAA"),
    ({"engine_wheelhouse_lock_sha256": None},
     "hosts 'gpu01', 'gpu02': engine_wheelhouse_lock_sha256 is not set; engine_wheelhouse_url needs the lock's "
     "sha256 pinned (`enclave bundle` prints it; or `sha256sum requirements.txt` in the wheelhouse), or "
     "engine_wheelhouse_lock_unpinned: true"),
    ({"weights_hub_client_lock_sha256": "sha256:" + GOOD}, "host 'gw01': weights_hub_client_lock_sha256 'sha256:aaa"),
    ({"weights_hub_client_lock_sha256": None},
     "host 'gw01': weights_hub_client_lock_sha256 is not set; weights_source type hf needs the lock's sha256 pinned"),
])
def test_a_bad_or_missing_lock_pin_stops_before_any_host(runs: list[object], inventory: Path,  # noqa: F811
                                                         values: dict[str, Any], said: str) -> None:
    _settings(inventory, **values)
    result = _deploy(inventory)
    assert result.exit_code == 2, result.output
    assert runs == []  # no ansible-playbook run started
    assert said in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_an_explicit_opt_out_or_another_source_needs_no_pin(runs: list[object], inventory: Path) -> None:  # noqa: F811
    _settings(inventory, engine_wheelhouse_lock_sha256=None, engine_wheelhouse_lock_unpinned=True,
              weights_hub_client_lock_sha256=None, weights_hub_client_lock_unpinned=True)
    assert _deploy(inventory).exit_code == 0
    _settings(inventory, engine_wheelhouse_url=None, engine_wheelhouse_lock_sha256=None,
              engine_wheelhouse_lock_unpinned=None, engine_index_url="https://pypi.example.internal/simple/")
    assert _deploy(inventory).exit_code == 0  # an index has no lock to pin
    # the opt-out is a boolean, not any truthy string
    _settings(inventory, engine_wheelhouse_url="http://w.example.internal/", engine_index_url=None,
              engine_wheelhouse_lock_unpinned="yes please")
    result = _deploy(inventory)
    assert result.exit_code == 2 and "engine_wheelhouse_lock_unpinned" in result.output, result.output
    assert len(runs) == 2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign,assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(timeout=10)


def _tasks(path: Path, names: list[str], tmp: Path) -> Path:
    """The named tasks of a role's task file, as a task file of their own (run in their file's order)."""
    tasks = [t for t in yaml.safe_load(path.read_text()) if t.get("name") in names]
    assert [t["name"] for t in tasks] == names, f"{path} lacks some of {names}"
    out = tmp / f"{path.stem}-lock.yml"
    out.write_text(yaml.safe_dump(tasks, sort_keys=False))
    return out


ENGINE_TASKS = ["Read the wheelhouse's hash-locked requirements", "Refuse a lock other than the pinned one",
                "Write the wheelhouse's hash-locked requirements"]


@pytest.mark.parametrize("swapped", [False, True])
def test_the_engine_installs_only_from_the_pinned_lock(tmp_path: Path, served: tuple[Path, str],
                                                       swapped: bool) -> None:
    root, url = served
    (root / "requirements.txt").write_text(LOCK)
    pin = hashlib.sha256(LOCK.encode()).hexdigest()
    if swapped:  # the server swapped a wheel, and the lock's hash of it with it
        (root / "requirements.txt").write_text(LOCK.replace("1" * 64, "3" * 64))
    dest = tmp_path / "venv-lock.txt"
    dest.write_text("the lock the venv was installed from\n")
    proc = run_play(tmp_path, roles=["engine"], groups={"enclave_nodes": {"node1": {}}},
                    task_files=(str(_tasks(ROLES / "engine/tasks/install.yml", ENGINE_TASKS, tmp_path)),),
                    extra={"engine_wheelhouse_url": url, "engine_wheelhouse_lock_sha256": pin,
                           "engine_requirements_file": str(dest)})
    out = " ".join((proc.stdout + proc.stderr).split())
    if not swapped:
        assert proc.returncode == 0, out[-3000:]
        assert dest.read_bytes() == LOCK.encode()  # byte for byte: the digest checked is the file pip reads
        return
    assert proc.returncode != 0
    actual = hashlib.sha256((root / "requirements.txt").read_bytes()).hexdigest()
    assert (f"node1: the wheelhouse lock {url}requirements.txt has sha256 {actual}, the inventory pins "
            f"engine_wheelhouse_lock_sha256 {pin}: nothing was installed") in out, out[-3000:]
    assert dest.read_text() == "the lock the venv was installed from\n"


HUB_TASKS = ["Read the hub client's hash lock", "Refuse a hub client lock other than the pinned one"]


def test_the_hub_client_lock_is_checked_against_its_pin(tmp_path: Path, served: tuple[Path, str]) -> None:
    root, url = served
    (root / "hub-client").mkdir()
    (root / "hub-client" / "requirements.txt").write_text(LOCK)
    pin = hashlib.sha256(LOCK.encode()).hexdigest()
    task_file = str(_tasks(ROLES / "weights/tasks/hub_client.yml", HUB_TASKS, tmp_path))
    extra = {"weights_hub_client_find_links": url + "hub-client/", "weights_hub_client_lock_sha256": pin}
    proc = run_play(tmp_path, roles=["weights"], groups={"enclave_staging": {"gw": {}}}, task_files=(task_file,),
                    extra=extra)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (root / "hub-client" / "requirements.txt").write_text(LOCK + "evil==6.6.6 --hash=sha256:" + "6" * 64 + "\n")
    proc = run_play(tmp_path, roles=["weights"], groups={"enclave_staging": {"gw": {}}}, task_files=(task_file,),
                    extra=extra)
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert (f"gw: the hub client lock {url}hub-client/requirements.txt has sha256 "
            f"{hashlib.sha256((root / 'hub-client' / 'requirements.txt').read_bytes()).hexdigest()}, the inventory "
            f"pins weights_hub_client_lock_sha256 {pin}") in out, out[-3000:]


def test_the_fetch_runs_as_its_own_user_in_a_confined_unit(tmp_path: Path) -> None:
    """What fetch_hf.yml hands systemd-run: the fetch user, only its own directory writable, the kit's /etc out of
    sight; the environment carries no token (that goes by file)."""
    show = {"name": "Show", "ansible.builtin.copy": {
        "content": "{{ {'props': weights_fetch_unit_properties, 'env': weights_fetch_setenv} | to_json }}",
        "dest": str(tmp_path / "unit.json"), "mode": "0600"}, "delegate_to": "localhost"}
    proc = run_play(tmp_path, roles=["weights"], groups={"enclave_staging": {"gw": {}}}, tasks=[show],
                    extra={"weights_repo": "org/name", "weights_revision": "e" * 40,
                           "weights_source": {"type": "hf", "endpoint": "http://hub.internal"},
                           "weights_hf_token": "hf_secretvalue0123456789"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    unit = json.loads((tmp_path / "unit.json").read_text())
    assert {"User=enclave-fetch", "Group=enclave-fetch", "NoNewPrivileges=yes", "ProtectSystem=strict",
            "ReadWritePaths=/srv/enclave/weights-fetch", "InaccessiblePaths=/etc/enclave",
            "BindPaths=/srv/enclave/models/org--name/" + "e" * 40 + ":/srv/enclave/weights-fetch/dest"} <= set(
                unit["props"])
    assert "--setenv=HF_ENDPOINT=http://hub.internal" in unit["env"]
    assert "--setenv=HF_HUB_DISABLE_XET=1" in unit["env"]
    assert not any("hf_secret" in item for item in unit["env"])


@pytest.mark.parametrize("user", ["root", "enclave", "Bad User"])
def test_the_fetch_user_is_never_a_privileged_one(tmp_path: Path, user: str) -> None:
    proc = run_play(tmp_path, roles=["weights"], groups={"enclave_staging": {"gw": {}}},
                    task_files=("weights/tasks/validate.yml",),
                    extra={"weights_repo": "org/name", "weights_revision": "e" * 40, "weights_fetch_user": user,
                           "weights_source": {"type": "local", "path": "/mnt/x"}})
    assert proc.returncode != 0
    assert f'weights_fetch_user "{user}" must be a user name of its own' in " ".join(proc.stdout.split())


def test_the_sandbox_pins_digests_it_computed(tmp_path: Path) -> None:
    wheels = tmp_path / "hub-client"
    wheels.mkdir()
    one, two = make_wheel(wheels, "huggingface_hub", "2.4.0"), make_wheel(wheels, "tqdm", "4.70.1")
    lock = hub.ensure_client_lock(wheels)
    text = lock.read_text()
    assert f"huggingface-hub==2.4.0 --hash=sha256:{hashlib.sha256(one.read_bytes()).hexdigest()}" in text
    assert f"tqdm==4.70.1 --hash=sha256:{hashlib.sha256(two.read_bytes()).hexdigest()}" in text
    assert hub.ensure_client_lock(wheels).read_text() == text  # stable: the pin does not move between `up`s

    path = engine_sandbox.write_engine_vars(tmp_path / "inv", "http://10.0.0.1:8810/w/", "b" * 64)
    written = yaml.safe_load(path.read_text())
    assert written["engine_wheelhouse_lock_sha256"] == "b" * 64
    assert written["engine_wheelhouse_url"] == "http://10.0.0.1:8810/w/"
