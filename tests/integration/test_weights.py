"""Weights on the sandbox: fetched with the real huggingface_hub client from the controller's hub mirror, refused
when the source lies or lacks a LICENSE, spread by the relay, repaired file by file, resumed after a real
interruption, and switched atomically (never to an unverified revision; back to a kept one without moving bytes).

Extra revisions of the tiny model are published into the sandbox's own hub mirror under refs of their own, so the
planned revision (and the other tests) are left alone; every test ends with the nodes back on the planned revision.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave import paths
from enclave.mirror.repo import publish
from enclave.sandbox import Sandbox
from enclave.sandbox.spec import SandboxSpec
from enclave.sandbox.tinymodel import TINY_MODEL_REPO, make_tiny_model

from .conftest import ENCLAVE, SANDBOX, STATE, enclave, ssh

MODEL_DIR = "/srv/enclave/models/" + TINY_MODEL_REPO.replace("/", "--")
NODES = ("node1", "node2")
HUB_ROOT = paths.cache_dir() / "sandbox" / "hub"


def planned_revision(inventory: Path) -> str:
    plan = yaml.safe_load((inventory.parent / "group_vars" / "all" / "enclave_plan.yml").read_text())
    return str(plan["enclave_plan"]["revision"])


def current(inventory: Path, host: str) -> str:
    return ssh(inventory, host, f"readlink {MODEL_DIR}/current").stdout.strip()


def last_transfer(inventory: Path, host: str) -> dict[str, Any]:
    out = ssh(inventory, host, f"cat {MODEL_DIR}/.enclave-last-transfer.json 2>/dev/null || echo null").stdout
    return json.loads(out) or {}


def variant(tmp_path: Path, ref: str, *, seed: int, drop: tuple[str, ...] = (),
            tamper: str | None = None) -> str:
    """Publish a variant of the tiny model into the sandbox's hub mirror under `ref`; return its commit."""
    source = tmp_path / ref
    make_tiny_model(source, seed=seed)
    for name in drop:
        (source / name).unlink()
    commit = publish(HUB_ROOT, TINY_MODEL_REPO, source, ref=ref)
    if tamper:
        # The mirror keeps advertising the recorded sha256 while serving other bytes: what a corrupting proxy or a
        # damaged mirror disk looks like to the client.
        stored = HUB_ROOT / TINY_MODEL_REPO / commit / tamper
        with stored.open("r+b") as f:
            f.seek(1000)
            f.write(b"TAMPERED-BY-TEST")
    return commit


@pytest.fixture(scope="module")
def weights_ready(deployed: subprocess.CompletedProcess[str], inventory: Path) -> str:
    revision = planned_revision(inventory)
    for host in NODES:
        assert current(inventory, host) == revision, f"{host} is not on the planned revision after deploy"
    return revision


def test_fetched_with_the_hub_client_and_signed(inventory: Path, weights_ready: str) -> None:
    out = enclave("weights", "info", "-i", str(inventory), "--json", check=True).stdout
    info = json.loads(out)
    assert info["revision"] == weights_ready
    assert info["source"].startswith("hf:http://"), info["source"]
    assert info["license_first_line"] == "MIT License"
    assert info["signed"] is True
    client = ssh(inventory, "gateway", "/opt/enclave/hub-client/bin/python -c "
                 "'import huggingface_hub; print(huggingface_hub.__version__)'").stdout.strip()
    assert client, "the staging host has no huggingface_hub client"
    print(f"staged {info['files']} files, {info['bytes']} bytes with huggingface_hub {client}")


def test_weights_verify_passes(inventory: Path, weights_ready: str) -> None:
    proc = enclave("weights", "verify", "-i", str(inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 passed, 0 failed" in proc.stdout


def test_a_file_served_with_a_wrong_sha256_is_refused(inventory: Path, weights_ready: str, tmp_path: Path) -> None:
    shard = "model-00001-of-00002.safetensors"
    bad = variant(tmp_path, "integration-tampered", seed=2, tamper=shard)
    proc = enclave("weights", "fetch", "-i", str(inventory), "--revision", bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{shard}: sha256 mismatch" in proc.stdout + proc.stderr
    for host in NODES:
        assert current(inventory, host) == weights_ready
        assert ssh(inventory, host, f"test -e {MODEL_DIR}/{bad}", check=False).returncode != 0, (
            f"the refused revision reached {host}")


def test_a_source_without_license_is_refused(inventory: Path, weights_ready: str, tmp_path: Path) -> None:
    unlicensed = variant(tmp_path, "integration-unlicensed", seed=3, drop=("LICENSE",))
    proc = enclave("weights", "fetch", "-i", str(inventory), "--revision", unlicensed)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "has no LICENSE" in proc.stdout + proc.stderr
    for host in NODES:
        assert ssh(inventory, host, f"test -e {MODEL_DIR}/{unlicensed}", check=False).returncode != 0


def test_a_flipped_byte_is_repaired_alone(inventory: Path, weights_ready: str) -> None:
    shard = f"{MODEL_DIR}/current/model-00002-of-00002.safetensors"
    size = int(ssh(inventory, "node1", f"stat -c %s {shard}").stdout)
    before_node2 = last_transfer(inventory, "node2")
    ssh(inventory, "node1", f"printf 'Z' | dd of={shard} bs=1 seek={size // 2} conv=notrunc status=none")
    assert ssh(inventory, "node1", f"/opt/enclave/tools/hosttools/nodetool.py verify {MODEL_DIR}/current",
               check=False).returncode == 1, "the flipped byte was not caught"

    enclave("weights", "sync", "-i", str(inventory), check=True)
    moved = last_transfer(inventory, "node1")
    print(f"repair of one flipped byte in a {size}-byte shard moved {moved['bytes_moved']} bytes: {moved}")
    assert moved["damaged_files"] == 1 and moved["missing_files"] == 0
    assert moved["rsync"]["files"] == 1 and moved["relay"] is None
    assert 0 < moved["bytes_moved"] < size, "more than the damaged file was sent"
    assert last_transfer(inventory, "node2") == before_node2, "node2 was sent something it did not need"
    assert ssh(inventory, "node1", f"/opt/enclave/tools/hosttools/nodetool.py verify {MODEL_DIR}/current",
               check=False).returncode == 0


def _limit_downloads(spec: SandboxSpec, rate: str | None) -> None:
    for name in NODES:
        dev = spec.host(name).veth_host(spec.name)
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, check=False)
        if rate:
            subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "16kb",
                            "latency", "400ms"], check=True)


def _bytes_present(inventory: Path, host: str, revision: str) -> int:
    out = ssh(inventory, host, f"du -sb --apparent-size {MODEL_DIR}/{revision} 2>/dev/null | cut -f1 || echo 0")
    return int(out.stdout.strip() or 0)


def test_an_interrupted_distribution_resumes_and_switching_back_moves_nothing(
        inventory: Path, weights_ready: str, tmp_path: Path) -> None:
    new = variant(tmp_path, "integration-resume", seed=1)
    spec = Sandbox(SANDBOX, state_root=STATE).recorded_spec()
    assert spec is not None
    _limit_downloads(spec, "256kbit")  # ~30 s for the model, so the relay can be cut in the middle
    try:
        run = subprocess.Popen([ENCLAVE, "weights", "sync", "-i", str(inventory), "--revision", new],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**_env(), "COLUMNS": "200"})
        deadline = time.monotonic() + 900
        sending = False
        while time.monotonic() < deadline and run.poll() is None and not sending:
            sending = ssh(inventory, "gateway", "pgrep -f '[t]ransfer.py relay-send'", check=False).returncode == 0
            time.sleep(0.5)
        assert sending, f"the relay never started:\n{run.communicate()[0] if run.poll() is not None else ''}"
        time.sleep(5)  # some files complete, one partial, the rest not yet sent
        killed = ssh(inventory, "gateway", "pkill -f '[t]ransfer.py relay-send'", check=False).returncode == 0
        output = run.communicate(timeout=900)[0]
    finally:
        _limit_downloads(spec, None)
    assert killed, f"the relay finished before it could be interrupted:\n{output}"
    assert run.returncode == 1, output
    assert "the relay failed" in output and "rerun to resume" in output, output
    total = int(json.loads(enclave("weights", "info", "-i", str(inventory), "--revision", new, "--json",
                                   check=True).stdout)["bytes"])
    present = {h: _bytes_present(inventory, h, new) for h in NODES}
    for host in NODES:
        assert current(inventory, host) == weights_ready, f"{host}: current moved to an unverified revision"
    assert any(0 < p < total for p in present.values()), f"no partial state to resume from: {present}"

    enclave("weights", "sync", "-i", str(inventory), "--revision", new, check=True)
    for host in NODES:
        assert current(inventory, host) == new
        moved = last_transfer(inventory, host)
        print(f"{host}: had {present[host]} of {total} bytes after the interruption; the resume moved "
              f"{moved['bytes_moved']} bytes (relay {moved['relay'] and moved['relay']['bytes_written']}, "
              f"rsync {moved['rsync'] and moved['rsync']['bytes_received']})")
        assert moved["revision"] == new
        assert moved["bytes_moved"] <= total - present[host] + 64 * 1024, "the resume sent what was already there"

    records = {h: last_transfer(inventory, h) for h in NODES}
    proc = enclave("weights", "sync", "-i", str(inventory), check=True)
    for host in NODES:
        assert current(inventory, host) == weights_ready, "switching back to the kept revision failed"
        assert last_transfer(inventory, host) == records[host], f"switching back moved bytes to {host}"
    assert "changed" in proc.stdout


def _env() -> dict[str, str]:
    return {**os.environ, "ENCLAVE_STATE_DIR": str(STATE)}


def test_verify_names_a_deleted_license_and_an_edit_with_its_mtime_put_back(
        inventory: Path, weights_ready: str) -> None:
    shard = f"{MODEL_DIR}/current/model-00001-of-00002.safetensors"
    # node1: a byte flipped with the file's mtime put back, as a careful tamperer would: size, mtime and inode match
    # the stamp, but the edit moved the file's ctime, which the stamp also records, so even the quick verify rehashes
    # and catches it. node2: LICENSE deleted.
    ssh(inventory, "node1", f"t=$(stat -c %y {shard}) && printf 'Q' | dd of={shard} bs=1 seek=4096 conv=notrunc "
                            f"status=none && touch -d \"$t\" {shard}")
    ssh(inventory, "node2", f"mv {MODEL_DIR}/current/LICENSE /root/LICENSE.moved")
    try:
        quick = json.loads(enclave("weights", "verify", "-i", str(inventory), "--json").stdout)
        failed = {(r["host"], r["check"]): r["message"] for r in quick["results"] if r["outcome"] == "failed"}
        assert "model-00001-of-00002.safetensors: sha256" in failed[("node1", "files_match_the_manifest")]
        assert "LICENSE is missing" in failed[("node2", "license_matches_the_manifest")]
        assert "LICENSE: missing" in failed[("node2", "files_match_the_manifest")]

        deep = json.loads(enclave("weights", "verify", "-i", str(inventory), "--deep", "--json").stdout)
        failed_deep = {(r["host"], r["check"]): r["message"] for r in deep["results"] if r["outcome"] == "failed"}
        assert "model-00001-of-00002.safetensors: sha256" in failed_deep[("node1", "files_match_the_manifest")]
    finally:
        ssh(inventory, "node2", f"mv /root/LICENSE.moved {MODEL_DIR}/current/LICENSE", check=False)
    enclave("weights", "sync", "-i", str(inventory), "-e", '{"weights_deep_verify": true}', check=True)
    assert enclave("weights", "verify", "-i", str(inventory), "--deep").returncode == 0
