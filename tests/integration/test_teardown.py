"""`enclave teardown` on the session's deployed sandbox, as its very last test (`destroys_sandbox` orders it
after every other test): teardown --keep-weights keeps exactly the models and the keys that verify them and removes
every unit, table, nginx, directory and service user of a full deployment (a redeploy of the base and weights phases
then moves no weights), a full teardown leaves nothing of the kit (and a same-named user the site made stays), and a
rerun changes nothing. The session's first deploy is what it tears down, so no deploy of its own is paid for."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from enclave.cli.teardown import teardown_request
from enclave.runner import PlaybookRequest, run_playbook
from tests.integration.conftest import enclave, ssh

# The phases that hold and check weights: the redeploy after --keep-weights proves the kept revisions verify with
# the kept keys and move nothing. The firewall and the gateway are not redeployed: the --keep-weights teardown has
# already removed them from a full deployment, and the final teardown's own part is the weights and their keys.
# The offline site kit's play first, as in every deploy: after test_scale_out the hosts install from the kit, whose
# staged copy the --keep-weights teardown kept while it removed the server and nginx: served again, nginx installed
# from the kit's own repository.
PHASES = ("kit.yml", "provision.yml", "weights.yml")
# What the kit leaves on a host, one line per item, read the same way before and after.
PROBE = r"""
for u in enclave-engine enclave-weights-seed enclave-firewall enclave-kit-server; do
  test -e /etc/systemd/system/$u.service && echo "unit $u"; done
systemctl is-active --quiet nginx && echo "nginx running"
dpkg-query -W -f '${Status}\n' nginx 2>/dev/null | grep -q '^install ok installed' && echo "nginx installed"
nft list table inet enclave >/dev/null 2>&1 && echo "table inet enclave"
for d in /opt/enclave /etc/enclave /srv/enclave /etc/nginx/enclave; do test -e $d && echo "dir $d"; done
for u in enclave-fetch enclave-seed; do getent passwd $u >/dev/null && echo "user $u";
  getent group $u >/dev/null && echo "group $u"; done
find /srv/enclave/models /etc/enclave -mindepth 1 -maxdepth 1 2>/dev/null | sed 's/^/in /'
true
"""
MODEL_FILES = "find /srv/enclave/models -type f ! -name '.enclave-*' -printf '%p %i %T@\\n' | sort"


def deploy_phases(inventory: Path) -> None:
    enclave("plan", "-i", str(inventory), check=True)
    for playbook in PHASES:
        result = run_playbook(PlaybookRequest(playbook=playbook, inventory=inventory))
        assert result.exit_code == 0, f"{playbook}: {[(f.host, f.message) for f in result.progress.failures]}"


def enclave_hosts(inventory: Path) -> list[str]:
    """Every host of the inventory: the gateway and the nodes, three or more once test_scale_out added one."""
    groups = yaml.safe_load(inventory.read_text())["all"]["children"].values()
    return sorted({host for group in groups for host in group.get("hosts") or {}})


def probe(inventory: Path) -> dict[str, set[str]]:
    return {h: set(ssh(inventory, h, PROBE).stdout.split("\n")) - {""} for h in enclave_hosts(inventory)}


@pytest.mark.destroys_sandbox
def test_teardown_keeps_weights_when_asked_removes_everything_else_and_reruns_change_nothing(
        deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    before = probe(inventory)
    assert {"unit enclave-engine", "unit enclave-firewall", "table inet enclave", "dir /opt/enclave"} <= before["node1"]
    gateway = {"unit enclave-weights-seed", "nginx running", "nginx installed", "dir /etc/nginx/enclave",
               "user enclave-fetch", "group enclave-fetch", "user enclave-seed", "group enclave-seed"}
    assert gateway <= before["gateway"]
    models = {h: ssh(inventory, h, MODEL_FILES).stdout for h in ("node1", "node2")}
    assert all(models.values())

    kept = enclave("teardown", "-i", str(inventory), "--yes", "--keep-weights", check=True)
    assert "removes:" in kept.stderr and "kept" in kept.stderr
    after = probe(inventory)
    model_dir = "in /srv/enclave/models/enclave-sandbox--tiny-llama"
    hosts = enclave_hosts(inventory)
    assert {"gateway", "node1", "node2"} <= set(hosts), hosts
    for host in hosts:
        assert after[host] - {"dir /etc/enclave", "dir /srv/enclave", model_dir} == {
            "in /etc/enclave/weights-allowed-signers", "in /etc/enclave/created-paths",
            *(["in /etc/enclave/weights-signing-key", "in /etc/enclave/weights-signing-key.pub"]
              if host == "gateway" else [])}, host
    # The kept revisions verify again with the kept keys: a redeploy moves and rewrites no model file (the stamp
    # cache, .enclave-stamps.json, is bookkeeping and is rewritten).
    deploy_phases(inventory)
    for host, listing in models.items():
        again = ssh(inventory, host, MODEL_FILES).stdout
        assert set(again.splitlines()) ^ set(listing.splitlines()) == set(), host

    # A user of a kit user's name that the site made itself (no kit marker in its comment) stays.
    ssh(inventory, "node1", "useradd --system --user-group --comment 'the site own seed' enclave-seed")
    try:
        enclave("teardown", "-i", str(inventory), "--yes", check=True)
        assert probe(inventory) == {h: {"user enclave-seed", "group enclave-seed"} if h == "node1" else set()
                                    for h in hosts}
    finally:
        ssh(inventory, "node1", "userdel enclave-seed")
    rerun = run_playbook(teardown_request(inventory, keep_weights=False))
    assert rerun.exit_code == 0
    assert {h: t.changed for h, t in rerun.progress.hosts.items()} == dict.fromkeys(hosts, 0)
