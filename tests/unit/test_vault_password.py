"""The vault password for one run: a named file as given, an asked one in a private file removed afterwards."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from enclave.ansible_env import ansible_env
from enclave.errors import UsageError
from enclave.vault_password import vault_password_file


def test_no_password_wanted() -> None:
    with vault_password_file(None, False) as path:
        assert path is None


def test_a_named_file_is_used_as_it_is(tmp_path: Path) -> None:
    given = tmp_path / "pw"
    given.write_text("secret\n")
    with vault_password_file(given, False) as path:
        assert path == given.resolve()
    assert given.read_text() == "secret\n"


def test_a_missing_named_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--vault-password-file .*nope: no such file"), \
            vault_password_file(tmp_path / "nope", False):
        pass


def test_both_ways_at_once_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="give one of them"), vault_password_file(tmp_path, True):
        pass


def test_asking_without_a_terminal_names_the_other_way() -> None:
    with pytest.raises(UsageError, match=r"needs a terminal.*--vault-password-file"), \
            vault_password_file(None, True, prompt=lambda _: "x", interactive=lambda: False):
        pass


def test_an_empty_answer_is_refused() -> None:
    with pytest.raises(UsageError, match="no password given"), \
            vault_password_file(None, True, prompt=lambda _: "", interactive=lambda: True):
        pass


def test_an_asked_password_lives_in_a_private_file_for_the_run_only() -> None:
    with vault_password_file(None, True, prompt=lambda _: "s3cret", interactive=lambda: True) as path:
        assert path is not None
        assert path.read_text() == "s3cret\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()


def test_the_file_is_removed_when_the_run_fails() -> None:
    seen: list[Path] = []
    with pytest.raises(RuntimeError), \
            vault_password_file(None, True, prompt=lambda _: "s3cret", interactive=lambda: True) as path:
        assert path is not None
        seen.append(path)
        raise RuntimeError("the run failed")
    assert seen and not seen[0].parent.exists()


def test_every_ansible_tool_of_the_run_gets_the_file_and_none_after(tmp_path: Path) -> None:
    """Planning reads (facts, rollback state), the playbook and the checks all start Ansible with ansible_env."""
    given = tmp_path / "pw"
    given.write_text("secret\n")
    assert "ANSIBLE_VAULT_PASSWORD_FILE" not in ansible_env()
    with vault_password_file(given, False) as path:
        assert ansible_env(tmp_path)["ANSIBLE_VAULT_PASSWORD_FILE"] == str(path)
        assert "secret" not in "".join(ansible_env(tmp_path).values())
    assert "ANSIBLE_VAULT_PASSWORD_FILE" not in ansible_env()
