"""One rule for a model revision (enclave.revision): every place that takes one applies it, and the copies the
on-host tool and the weights role carry are the same pattern."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from enclave.cli import app
from enclave.errors import UsageError
from enclave.hosttools import hubfetch
from enclave.revision import REVISION_RE, check_revision
from enclave.weights import bundle

REPO = Path(__file__).resolve().parents[2]
GOOD = "0123456789abcdef0123456789abcdef01234567"
# Names the weights role and `enclave weights --revision` took for non-hub sources before the one rule.
NOT_REVISIONS = ["main", "v1.0", "2026-11-build", GOOD.upper(), GOOD[:-1], GOOD + "0", "../" + GOOD]


def test_the_on_host_fetcher_carries_the_same_pattern() -> None:
    assert hubfetch.REVISION_RE.pattern == REVISION_RE.pattern


@pytest.mark.parametrize(("tasks", "variable"), [("weights/tasks/validate.yml", "weights_revision"),
                                                 ("update/tasks/validate.yml", "update_revision")])
def test_the_roles_check_every_revision_with_the_same_pattern(tasks: str, variable: str) -> None:
    listed = yaml.safe_load((REPO / "playbooks/roles" / tasks).read_text())
    checks = [c for task in listed for that in [(task.get("ansible.builtin.assert") or {}).get("that", [])]
              for c in ([that] if isinstance(that, str) else that) if variable in c]
    patterns = set(re.findall(variable + r" is ansible\.builtin\.regex\('([^']*)'\)", " ".join(checks)))
    # One pattern, unconditional: no "source type is not hf or ..." escape for other sources.
    assert patterns == {f"^{REVISION_RE.pattern}$"}, checks
    assert all(c.strip().startswith(f"{variable} is") for c in checks), checks


@pytest.mark.parametrize("name", NOT_REVISIONS)
def test_check_revision_refuses_names_naming_where(name: str) -> None:
    with pytest.raises(UsageError, match=r"^--model-revision must be a 40-hex commit id"):
        check_revision(name, "--model-revision")
    assert check_revision(GOOD, "x") == GOOD


@pytest.mark.parametrize("verb", ["fetch", "sync", "info"])
def test_weights_verbs_refuse_a_branch_name_before_reading_the_inventory(verb: str, tmp_path: Path) -> None:
    # The inventory does not exist: the revision is refused first, in the same words as everywhere else.
    result = CliRunner().invoke(app, ["weights", verb, "-i", str(tmp_path / "none.yml"), "--revision", "main"])
    assert result.exit_code == 2, result.output
    assert "--revision must be a 40-hex commit id (lower case), got 'main'" in result.output
    assert "Traceback" not in result.output


def test_update_refuses_a_branch_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["update", "-i", str(tmp_path / "none.yml"), "--model-revision", "v2"])
    assert result.exit_code == 2, result.output
    assert "--model-revision must be a 40-hex commit id" in result.output


def test_pack_refuses_a_directory_label_as_revision(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(UsageError, match="--revision must be a 40-hex commit id"):
        bundle.pack(repo="org/tiny", revision="2026-11-build", out_dir=tmp_path / "out", source_dir=model)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("info", "said"), [
    ({"repo": "org/tiny", "revision": "main", "parts": 0}, "'revision' must be a 40-hex commit id"),
    ({"repo": "org/tiny", "revision": "../../etc", "parts": 0}, "'revision' must be a 40-hex commit id"),
    ({"repo": "nonsense", "revision": GOOD, "parts": 0}, "'repo' must be ORG/NAME"),
    ({"repo": "org/tiny", "revision": GOOD, "parts": "2"}, "'parts' must be a whole number"),
    ({"repo": "org/tiny", "revision": GOOD}, "'parts' must be a whole number"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_a_bundle_naming_a_bad_revision_or_repo_is_refused_before_its_files_are_read(
        tmp_path: Path, info: object, said: str) -> None:
    (tmp_path / bundle.INFO_NAME).write_text(json.dumps(info))
    with pytest.raises(UsageError, match=re.escape(said)) as caught:
        bundle.check(tmp_path)
    assert str(tmp_path / bundle.INFO_NAME) in str(caught.value)
