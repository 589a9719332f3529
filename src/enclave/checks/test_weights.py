"""weights: `current` is the planned revision, its signed manifest is trusted, LICENSE matches, every file matches.

The file check runs the on-host tool the weights role installed, so a node is judged by the same code that activated
it; the stamp cache keeps it fast, `enclave verify --deep` rehashes every byte.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from enclave.checks.settings import host_settings, render, role_data

testinfra_hosts = ["ansible://enclave_nodes"]


@pytest.fixture
def weights(hostvars: dict[str, Any]) -> dict[str, Any]:
    settings = host_settings(hostvars, "weights")
    if not isinstance(settings.get("enclave_plan"), dict):
        pytest.skip("no plan in the inventory (group_vars/all/enclave_plan.yml): run `enclave plan` or deploy first")
    settings.update({k: v for k, v in role_data("weights", "vars").items() if k not in hostvars})
    names = ("weights_repo", "weights_revision", "weights_model_dir", "weights_revision_dir", "weights_tool_dir",
             "weights_nodetool", "weights_allowed_signers", "weights_signer_identity")
    for name in names:  # in order: each may refer to the ones before it
        settings[name] = render(settings[name], settings)
    return settings


def _tool(host: Any, weights: dict[str, Any], *args: str) -> tuple[int, dict[str, Any], str]:
    argv = [weights["weights_nodetool"], *args, "--json"]
    result = host.run(" ".join(shlex.quote(a) for a in argv))
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else {}
    except ValueError:
        data = {}
    return result.rc, data, (result.stderr or result.stdout).strip()


def test_current_is_the_planned_revision(host: Any, weights: dict[str, Any]) -> None:
    link = host.file(f"{weights['weights_model_dir']}/current")
    assert link.is_symlink, f"{link.path} is missing or not a symlink: no revision was activated"
    assert link.linked_to.rstrip("/").rsplit("/", 1)[-1] == weights["weights_revision"], (
        f"{link.path} points at {link.linked_to}, the plan says {weights['weights_revision']}")


def test_manifest_signature(host: Any, weights: dict[str, Any]) -> None:
    rc, data, text = _tool(host, weights, "verify-signature", f"{weights['weights_model_dir']}/current",
                           "--allowed-signers", weights["weights_allowed_signers"],
                           "--identity", weights["weights_signer_identity"])
    assert rc == 0, f"the manifest of current is not signed by the staging host: {data.get('error', text)}"


def test_license_matches_the_manifest(host: Any, weights: dict[str, Any]) -> None:
    rc, manifest, text = _tool(host, weights, "manifest", "show", f"{weights['weights_model_dir']}/current")
    assert rc == 0, f"cannot read the manifest of current: {manifest.get('error', text)}"
    license_file = host.file(f"{weights['weights_model_dir']}/current/LICENSE")
    assert license_file.is_file, f"{license_file.path} is missing: the weights' license must travel with them"
    found = host.check_output(f"sha256sum {shlex.quote(license_file.path)}").split()[0]
    assert found == manifest["license_sha256"], (
        f"{license_file.path} has sha256 {found}, the manifest records {manifest['license_sha256']}")


def test_files_match_the_manifest(host: Any, weights: dict[str, Any], request: pytest.FixtureRequest) -> None:
    deep = ["--deep"] if request.config.getoption("--deep") else []
    rc, report, text = _tool(host, weights, "verify", f"{weights['weights_model_dir']}/current", *deep)
    problems = report.get("problems") or []
    described = "; ".join(f"{p['path']}: {p['kind']}" for p in problems[:5])
    assert rc == 0, f"current does not match its manifest: {described or report.get('error', text)}"
