"""The supply chain on the sandbox (issue #14, finding 3): a wheel swapped on the wheel server together with a lock
rewritten to match it is refused by the lock's pinned digest before pip runs, and the node keeps the venv it had;
the hub client runs as its own unprivileged user, which cannot read the signing key.

The swap is made in a copy of the sandbox's wheelhouse (links to the shared cache's wheels, one wheel rewritten),
served by a web server this test starts on the controller's sandbox address; the shared cache is never changed."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from enclave import paths
from enclave.engine.build import SANDBOX_BUILD
from enclave.runner import PlaybookRequest, run_playbook
from enclave.sandbox import Sandbox

from .conftest import SANDBOX, STATE, enclave, ssh
from .test_weights import NODES, current, planned_revision, variant
from .test_weights_token import _throttle

VENV = f"/opt/enclave/vllm-{SANDBOX_BUILD.installed_version}"
FETCH_USER = "enclave-fetch"
KEY = "/etc/enclave/weights-signing-key"


def _controller() -> str:
    spec = Sandbox(SANDBOX, state_root=STATE).recorded_spec()
    assert spec is not None
    return str(spec.controller_address)


def _swapped_wheelhouse(dest: Path) -> tuple[str, str, str]:
    """A copy of the served wheelhouse with its smallest wheel rewritten (same file name, one more file inside) and
    requirements.txt rewritten to that wheel's new sha256: what an attacker who controls the wheel server serves.
    Returns (wheel name, old sha256, new sha256)."""
    real = paths.cache_dir() / "wheelhouse" / SANDBOX_BUILD.name
    dest.mkdir()
    for item in real.iterdir():
        (dest / item.name).symlink_to(item)
    victim = min(real.glob("*.whl"), key=lambda w: w.stat().st_size)
    (dest / victim.name).unlink()
    shutil.copyfile(victim, dest / victim.name)
    with zipfile.ZipFile(dest / victim.name, "a") as wheel:
        wheel.writestr("enclave_swapped_by_test.py", "print('not what the lock was made from')\n")
    old = hashlib.sha256(victim.read_bytes()).hexdigest()
    new = hashlib.sha256((dest / victim.name).read_bytes()).hexdigest()
    lock = (real / "requirements.txt").read_text()
    assert old in lock
    (dest / "requirements.txt").unlink()
    (dest / "requirements.txt").write_text(lock.replace(old, new))
    return victim.name, old, new


Swapped = tuple[str, Path, tuple[str, str, str]]  # the server's URL, its log, (wheel, old sha256, new sha256)


@pytest.fixture
def swapped_server(tmp_path: Path) -> Iterator[Swapped]:
    house = tmp_path / "swapped"
    swap = _swapped_wheelhouse(house)
    with socket.socket() as probe:  # a free port on the controller's sandbox address
        probe.bind((_controller(), 0))
        port = probe.getsockname()[1]
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", _controller(), "--directory",
                                   str(house), str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(50):
            with socket.socket() as s:
                if s.connect_ex((_controller(), port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://{_controller()}:{port}/", log, swap
    finally:
        server.terminate()
        server.wait(timeout=10)


def _venv_state(inventory: Path, host: str) -> str:
    """What the node's engine venv was installed from and what it holds: the lock, the stamp, every dist-info RECORD."""
    return ssh(inventory, host, f"cd {VENV} && sha256sum enclave-requirements.txt .enclave-installed && "
                                "cat lib/python3*/site-packages/*.dist-info/RECORD | sha256sum && "
                                "ls lib/python3*/site-packages | sha256sum").stdout


@pytest.mark.usefixtures("deployed")
def test_a_swapped_wheel_with_a_matching_lock_is_refused(inventory: Path, swapped_server: Swapped) -> None:
    url, log, (wheel, old, new) = swapped_server
    pin = yaml.safe_load((inventory.parent / "group_vars" / "all" / "engine.yml").read_text())[
        "engine_wheelhouse_lock_sha256"]
    swapped_lock = hashlib.sha256(Path(log.parent / "swapped" / "requirements.txt").read_bytes()).hexdigest()

    # Without the pin, the hashes alone would take it: the swapped lock names the swapped wheel's own digest.
    name, version = re.match(r"(.+?)-([^-]+)-", wheel).groups()  # type: ignore[union-attr]
    probe = ssh(inventory, "node1", f"rm -rf /tmp/swapcheck && mkdir /tmp/swapcheck && "
                f"echo '{name}=={version} --hash=sha256:{new}' > /tmp/swapcheck/req.txt && "
                f"{VENV}/bin/pip download -q --disable-pip-version-check --no-index --no-deps --require-hashes "
                f"--find-links {url} --trusted-host {_controller()} -d /tmp/swapcheck -r /tmp/swapcheck/req.txt "
                "&& echo TAKEN; rm -rf /tmp/swapcheck", check=False)
    assert "TAKEN" in probe.stdout, f"pip did not take the swapped wheel on its own: {probe.stdout}{probe.stderr}"
    served_before = log.read_text()

    before = {host: _venv_state(inventory, host) for host in NODES}
    result = enclave("deploy", "-i", str(inventory), "--tags", "engine", "-e", f"engine_wheelhouse_url={url}")
    out = " ".join((result.stdout + result.stderr).split())
    print(f"swapped {wheel}: sha256 {old} -> {new}; served lock {swapped_lock}, pinned {pin}")
    print(out[-1500:])
    assert result.returncode != 0, out[-3000:]
    for host in NODES:
        assert (f"{host}: the wheelhouse lock {url}requirements.txt has sha256 {swapped_lock}, the inventory pins "
                f"engine_wheelhouse_lock_sha256 {pin}") in out, out[-3000:]
        assert _venv_state(inventory, host) == before[host], f"{host}'s venv changed"
    served = log.read_text()[len(served_before):]
    assert "GET /requirements.txt" in served
    assert ".whl" not in served, f"a node fetched a wheel from the swapped server: {served}"


SAMPLE, RUNNING = "/tmp/enclave-fetchuser-sample", "/tmp/enclave-fetchuser-sampling"
# The owner and program of every process whose command line names hubfetch.py, sampled on the staging host while
# it runs (systemd-run, root's, names it too: it is the launcher, not the client).
SAMPLER = (f"rm -f {SAMPLE}; touch {RUNNING}; nohup sh -c 'while [ -e {RUNNING} ]; do "
           f"for p in $(grep -lE \"hubfetch[.]py\" /proc/[0-9]*/cmdline 2>/dev/null); do "
           f"echo owner=$(stat -c %U ${{p%/cmdline}}),$(tr \"\\0\" \" \" <$p | cut -d\" \" -f1); done; "
           f"sleep 0.1; done' >{SAMPLE} 2>&1 </dev/null &")


@pytest.mark.usefixtures("deployed")
def test_the_hub_client_runs_as_a_user_that_cannot_read_the_signing_key(inventory: Path, tmp_path: Path) -> None:
    # A model this sandbox has never staged (a staged revision is not fetched again): a real fetch every run.
    revision = variant(tmp_path, f"integration-fetchuser-{time.time_ns()}", seed=time.time_ns() % 1_000_000)
    spec = Sandbox(SANDBOX, state_root=STATE).recorded_spec()
    assert spec is not None
    ssh(inventory, "gateway", SAMPLER)
    _throttle(spec, "2mbit")
    try:
        result = run_playbook(PlaybookRequest(playbook="weights.yml", inventory=inventory, tags=("weights-stage",),
                                              extra_vars={"weights_revision": revision}), runs_dir=STATE / "runs")
    finally:
        _throttle(spec, None)
        sample = ssh(inventory, "gateway", f"rm -f {RUNNING}; sleep 0.5; cat {SAMPLE}; rm -f {SAMPLE}").stdout
    assert result.exit_code == 0, f"the fetch failed: {result.progress.failures} (run dir {result.run_dir})"
    # A process that ended between the listing and the stat leaves an empty owner, and one that ended (or is a
    # zombie) before its command line was read leaves an empty program: neither is a sample.
    pairs = (line.removeprefix("owner=").partition(",") for line in sample.split() if line.startswith("owner="))
    seen = {(owner, program) for owner, _, program in pairs if owner and program}
    print(f"processes naming hubfetch.py (owner, program): {sorted(seen)} ({sample.count('owner=')} samples)")
    client = {owner for owner, program in seen if program.endswith("/hub-client/bin/python")}
    assert client == {FETCH_USER}, f"the hub client ran as {client or 'nothing sampled'}: {seen}"
    assert {program for owner, program in seen if owner != FETCH_USER} <= {"systemd-run", "/usr/bin/systemd-run"}

    key = ssh(inventory, "gateway", f"stat -c '%U %a' {KEY} $(dirname {KEY}); "
              f"runuser -u {FETCH_USER} -- cat {KEY} >/dev/null 2>/tmp/err; echo rc=$? $(cat /tmp/err)")
    print(key.stdout.strip())
    lines = key.stdout.splitlines()
    assert lines[0] == "root 600"
    assert "rc=1" in lines[2] and "Permission denied" in lines[2], key.stdout
    # afterwards the fetched files are root's, the token file is gone, and no process of the user is left
    left = ssh(inventory, "gateway", f"find /srv/enclave/models/*/{revision} ! -user root | head; "
               f"ls /srv/enclave/weights-fetch/hub-token 2>&1; pgrep -u {FETCH_USER} || echo none").stdout
    assert left.splitlines()[-1] == "none" and "No such file" in left, left
    assert left.splitlines()[0].startswith("ls:"), f"files not root's after the fetch: {left}"
    for host in NODES:  # staging only: the nodes stay where they were
        assert current(inventory, host) == planned_revision(inventory)
