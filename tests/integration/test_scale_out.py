"""Scale-out on the session's deployed sandbox, from the offline site kit (issue #18): a kit is built from the
inventory's plan while the sandbox's stand-in for the internet (its hub) still answers; a fresh venv gets the CLI
from the kit alone (`pip install --no-index`); the controller then stops serving the nodes anything but time, so
every package, wheel and weight can only come from the kit. A tampered copy of the kit is refused at import naming
the file, a validly signed kit lacking one package by the self-test naming it; the kit itself is imported (the
staging host copies, checks and serves it) and a third inference node, added to the inventory, joins through the
kit's `enclave deploy`: provisioned from the kit's packages, vLLM from its wheelhouse, the model from its peers (the
relay starts at a node that holds the revision; the staging host sends nothing), verified, in the gateway's
rotation, while the engines already serving are not restarted.

`grows_sandbox` orders it after every test that expects two nodes and the sandbox's own sources; the teardown test,
last, removes all three and redeploys (the kit first) after its --keep-weights teardown.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from enclave.kit import apt, build, importer, manifest
from enclave.kit.manifest import KitKey
from enclave.plan import planfile
from enclave.sandbox import Sandbox
from enclave.sandbox.hub import HUB_PORT
from tests.integration.conftest import SANDBOX, STATE, enclave, ssh
from tests.integration.nethelpers import Gateway, answering_engines, host_address, served_model
from tests.integration.test_weights import current, last_transfer, planned_revision

UNIT = "enclave-engine.service"
PEERS = ("node1", "node2")
KIT = STATE / "site-kit"  # not STATE / "kit": the kit signing key lives there
KIT_VENV = STATE / "site-kit-cli"


def engine_pid(inventory: Path, host: str) -> str:
    return ssh(inventory, host, f"systemctl show {UNIT} -p MainPID --value").stdout.strip()


def build_kit(inventory: Path) -> str:
    """`enclave kit build` as on a connected machine (the hub stand-in plays the internet); returns the key's pin."""
    shutil.rmtree(KIT, ignore_errors=True)
    controller = yaml.safe_load(inventory.read_text())["all"]["vars"]["base_ntp_servers"][0]
    built = enclave("kit", "build", "-i", str(inventory), "--out", str(KIT), "--no-gpu",
                    "--endpoint", f"http://{controller}:{HUB_PORT}", check=True)
    pin = re.search(r"--pin\s+(SHA256:\S+)", built.stdout)
    assert pin, built.stdout
    return pin.group(1)


def install_cli_from_kit() -> str:
    """The controller's CLI in a fresh venv from the kit's controller wheelhouse alone, as the runbook says."""
    shutil.rmtree(KIT_VENV, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(KIT_VENV)], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=300)
    lock = KIT / "wheels" / "controller" / "requirements.txt"
    installed = subprocess.run([str(KIT_VENV / "bin" / "pip"), "install", "--no-index", "--find-links",
                                str(lock.parent), "--require-hashes", "-r", str(lock)], capture_output=True,
                               text=True, stdin=subprocess.DEVNULL, timeout=600, check=False)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return str(KIT_VENV / "bin" / "enclave")


def tampered_copy() -> tuple[Path, str]:
    """A copy of the kit (hard links: no second gigabyte) with one wheel's bytes changed (a new file, not the
    linked one); returns it and the changed file's path inside the kit."""
    copy = STATE / "site-kit-tampered"
    shutil.rmtree(copy, ignore_errors=True)
    subprocess.run(["cp", "-al", str(KIT), str(copy)], check=True, stdin=subprocess.DEVNULL)
    wheel = sorted((copy / "wheels" / "hub-client").glob("*.whl"))[0]
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.unlink()
    wheel.write_bytes(bytes(data))
    return copy, str(wheel.relative_to(copy))


def lacking(package: str) -> Path:
    """The kit as a build whose repository lacks `package` makes it: the same keys (kept beside the state, where
    `kit build` made them), the package's .deb gone, the repository re-indexed and re-signed, the manifest re-hashed
    and re-signed; hard links for the rest."""
    copy = STATE / "site-kit-lacking"
    shutil.rmtree(copy, ignore_errors=True)
    subprocess.run(["cp", "-al", str(KIT), str(copy)], check=True, stdin=subprocess.DEVNULL)
    repo = copy / build.APT_DIR
    debs = list(repo.glob(f"{package}_*.deb"))
    assert debs, f"the kit holds no {package}"
    # written anew below: never through a hard link into the real kit
    for path in [*debs, *(repo / n for n in ("Packages", "Release", "InRelease", "Release.gpg")),
                 *(copy / n for n in manifest.META if (copy / n).exists())]:
        path.unlink()
    apt.index(repo, apt.SigningKey(STATE / "kit" / "apt-key"), label="enclave-kit")
    document = json.loads((KIT / manifest.MANIFEST).read_text())
    # only the repository changed: its files hashed anew, every other entry as the verified kit lists it
    rehashed = [{"path": f"{build.APT_DIR}/{f.name}", "size": f.stat().st_size, "sha256": manifest.sha256_file(f)}
                for f in sorted(repo.iterdir()) if f.is_file()]
    document["files"] = sorted([*(f for f in document["files"] if not f["path"].startswith(f"{build.APT_DIR}/")),
                                *rehashed], key=lambda f: f["path"])
    manifest.write_manifest(copy, document, KitKey(STATE / "kit" / "kit-key"))
    return copy


@pytest.mark.grows_sandbox
def test_a_third_node_joins_from_the_offline_site_kit_with_weights_from_its_peers(
        deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    revision = planned_revision(inventory)
    pids = {h: engine_pid(inventory, h) for h in PEERS}
    assert all(p not in ("", "0") for p in pids.values()), pids

    pin = build_kit(inventory)
    cli = install_cli_from_kit()
    grown = Sandbox(SANDBOX, state_root=STATE).up(nodes=3, offline_kit=True, report=lambda m: print(f"sandbox: {m}"))
    assert grown.inventory == inventory and "node3" in inventory.read_text()
    # From here on the controller serves the nodes time only: no package mirror, wheel server or hub.
    assert grown.services == {"ntp": True}, grown.services
    settings = importer.settings_path(inventory)

    tampered, changed = tampered_copy()
    refused = enclave("kit", "import", str(tampered), "-i", str(inventory), "--pin", pin, cli=cli)
    assert refused.returncode != 0 and changed in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr and not settings.exists()
    shutil.rmtree(tampered)
    # A kit without a package the roles install (signed by the same key): refused by the self-test, naming it.
    short = enclave("kit", "import", str(lacking("chrony")), "-i", str(inventory), "--pin", pin, cli=cli)
    assert short.returncode == 2, short.stdout + short.stderr
    assert "package chrony: not in the kit's apt repository" in short.stdout + short.stderr, short.stderr
    assert not settings.exists()
    shutil.rmtree(STATE / "site-kit-lacking")

    imported = enclave("kit", "import", str(KIT), "-i", str(inventory), "--pin", pin, cli=cli)
    assert imported.returncode == 0, imported.stdout[-6000:] + imported.stderr[-3000:]
    kit_url = yaml.safe_load(settings.read_text())["enclave_apt_sources"][0]["uris"][0]
    assert kit_url.startswith(f"http://{host_address(inventory, 'gateway')}:"), kit_url

    proc = enclave("deploy", "-i", str(inventory), timeout=1800, cli=cli)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    # deploy ran the shipped checks of what it touched with the kit's CLI (pytest and testinfra from the kit)
    assert re.search(r"verify: \d+ passed, 0 failed", proc.stdout), proc.stdout[-3000:]

    # node3's only package source is the kit on the staging host, and its engine came from the kit's wheelhouse.
    sources = ssh(inventory, "node3", "cat /etc/apt/sources.list.d/enclave.sources; cat /etc/apt/sources.list; "
                  "ls /etc/apt/sources.list.d").stdout
    assert re.findall(r"^URIs: (.*)$", sources, re.MULTILINE) == [kit_url], sources
    assert ssh(inventory, "node3", "apt-get -q update >/dev/null && apt-cache policy nginx",
               check=False).stdout.count(kit_url.rstrip("/")) >= 1

    # The weights: node3 holds the planned revision, verified, and got its bytes by the relay from a peer.
    assert current(inventory, "node3") == revision
    record = last_transfer(inventory, "node3")
    print(f"node3 received {record.get('bytes_moved')} bytes: relay {record.get('relay')}, rsync {record.get('rsync')}")
    assert record["revision"] == revision
    assert (record.get("relay") or {}).get("source") in PEERS, record
    assert record.get("rsync") is None, f"node3 fetched files from the staging host by rsync: {record}"
    assert int(record["bytes_moved"]) > 0 and int(record["relay"]["files_written"]) == int(record["missing_files"])
    verify = enclave("weights", "verify", "-i", str(inventory), "--limit", "node3", cli=cli)
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]

    # The engine serves through the gateway next to its peers, which kept running: deploy restarted neither.
    assert ssh(inventory, "node3", f"systemctl is-active {UNIT}", check=False).stdout.strip() == "active"
    assert {h: engine_pid(inventory, h) for h in PEERS} == pids, "adding a node restarted a running engine"
    gateway = Gateway.of(inventory)
    port = int((planfile.read(inventory) or {}).get("port", 8000))
    answered = answering_engines(gateway, inventory, served_model(gateway), count=9)
    assert f"{host_address(inventory, 'node3')}:{port}" in answered, answered
