"""The weights signer is pinned on the controller (issue #14, finding 4): the first staging records the staging
host's key by fingerprint, a different key afterwards stops the run naming both and the re-key command, and
`enclave weights rekey` is the one way to accept the new one. The role's real signer.yml runs here with a local
ansible-playbook; fingerprints are checked against ssh-keygen's own."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from typer.testing import CliRunner

from enclave.cli import app
from enclave.weights import signer
from tests.unit.role_render import REPO, ROLES, run_play

spec = importlib.util.spec_from_file_location("enclave_signer", REPO / "playbooks/filter_plugins/enclave_signer.py")
assert spec is not None and spec.loader is not None
filters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(filters)
runner = CliRunner()


def keygen(path: Path) -> str:
    """A fresh ed25519 key at `path`; its fingerprint as ssh-keygen -l prints it."""
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "enclave-weights@staging", "-f", str(path)],
                   check=True)
    return subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True,
                          text=True).stdout.split()[1]


def test_the_filter_fingerprint_is_ssh_keygens(tmp_path: Path) -> None:
    expected = keygen(tmp_path / "key")
    assert filters.ssh_fingerprint((tmp_path / "key.pub").read_text()) == expected


def run_signer(tmp: Path) -> tuple[Any, Path]:
    """signer.yml on a staging host and a node (both local), then each host writes the key it would trust."""
    trusted = tmp / "trusted"
    trusted.mkdir(exist_ok=True)
    proc = run_play(tmp, roles=["weights"], groups={"enclave_staging": {"staging": {}}, "enclave_nodes": {"node1": {}}},
                    task_files=("weights/tasks/signer.yml",),
                    tasks=[{"name": "Write the trusted key", "ansible.builtin.copy": {
                        "content": "{{ weights_signer_pubkey }}", "dest": f"{trusted}/{{{{ inventory_hostname }}}}",
                        "mode": "0644"}}],
                    extra={"enclave_etc_dir": str(tmp / "etc")})
    return proc, trusted


def test_first_staging_pins_the_key_a_new_key_is_refused_until_rekey(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    key = tmp_path / "etc" / "weights-signing-key"
    first = keygen(key)
    pin = tmp_path / "pki" / "weights-signer"  # hosts.yml is a file: pki/ beside it (inventory_layout.kit_dir)
    assert signer.pin_path(tmp_path / "hosts.yml") == pin

    proc, trusted = run_signer(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert filters.pinned_fingerprint(str(pin)) == first == signer.read_pin(tmp_path / "hosts.yml")
    assert {p.name: p.read_text() for p in trusted.iterdir()} == dict.fromkeys(
        ("staging", "node1"), (key.with_suffix(".pub")).read_text().strip())

    second = keygen(key)  # the staging host rebuilt, or someone swapped its key
    pinned_text = pin.read_text()
    for p in trusted.iterdir():
        p.unlink()
    proc, trusted = run_signer(tmp_path)
    assert proc.returncode != 0
    refusal = f"the weights signing key changed: pinned {first}"
    assert refusal in proc.stdout and f"now has {second}" in proc.stdout, proc.stdout[-3000:]
    assert f"enclave weights rekey -i {tmp_path / 'hosts.yml'} --fingerprint {second}" in proc.stdout
    assert list(trusted.iterdir()) == [] and pin.read_text() == pinned_text  # nobody trusts it, the pin stays

    result = runner.invoke(app, ["weights", "rekey", "-i", str(tmp_path / "hosts.yml"), "--fingerprint", second])
    assert result.exit_code == 0, result.output
    assert f"{first} -> {second}" in result.output
    proc, trusted = run_signer(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert filters.pinned_fingerprint(str(pin)) == second
    assert {p.name for p in trusted.iterdir()} == {"staging", "node1"}


def test_rekey_refuses_what_is_not_a_fingerprint(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    result = runner.invoke(app, ["weights", "rekey", "-i", str(inventory), "--fingerprint", "SHA256:short"])
    assert result.exit_code == 2
    assert "--fingerprint 'SHA256:short': not an OpenSSH SHA256 fingerprint" in result.output
    assert not signer.pin_path(inventory).exists()


def test_a_damaged_pin_is_an_error_not_a_first_sight(tmp_path: Path) -> None:
    pin = tmp_path / "weights-signer"
    pin.write_text("# comment only, the fingerprint line lost\n")
    # The role stops rather than taking a damaged pin for none and pinning whatever key it sees.
    with pytest.raises(AnsibleFilterError, match="no SHA256 fingerprint"):
        filters.pinned_fingerprint(str(pin))


def test_both_plays_check_the_pin_before_writing_allowed_signers() -> None:
    for name in ("stage.yml", "distribute.yml"):
        text = (ROLES / "weights" / "tasks" / name).read_text()
        assert text.index("import_tasks: signer.yml") < text.index("allowed_signers.j2"), name
        assert "weights_signer_pubkey_file" not in text, name  # the key comes only through the pin check
