"""The controller's audit trail (enclave.audit): one JSON line per state-changing verb, however it ends, with
secrets redacted, appended safely beside other writers; `enclave audit` shows it."""

from __future__ import annotations

import datetime as dt
import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from enclave import audit, paths
from enclave.cli import app
from tests.unit.offline_cli import offline_runs
from tests.unit.test_inventory import write_inventory

runner = CliRunner()
SECRETS = {"cli_key": "cli-key-" + "k" * 24, "nested_token": "hf_" + "t" * 30, "env_token": "hf_" + "e" * 30,
           "vault_env": "vault-" + "v" * 20}


def _records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in paths.audit_log().read_text().splitlines()]


@pytest.fixture
def fake_drain(isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`enclave drain` run offline, its playbook run noting a run id: the titles of the runs it started."""
    from enclave.cli import drain as drain_cli

    return offline_runs(monkeypatch, drain_cli, run_id="20261204-180000-drain-abc123").titles


def test_a_verb_is_recorded_with_who_when_what_commit_result_and_run(fake_drain: list[str], tmp_path: Path) -> None:
    repo = tmp_path / "ops"
    repo.mkdir()
    inv = write_inventory(repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "inventory"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = runner.invoke(app, ["drain", "n1", "-i", str(inv)])
    assert result.exit_code == 0, result.output
    assert fake_drain == ["drain n1"]
    [record] = _records()
    when = dt.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert record["time"].endswith("Z") and before <= when <= dt.datetime.now(dt.UTC)
    assert record["user"] and record["host"]
    assert record["verb"] == "drain" and record["inventory"] == str(inv.resolve())
    assert record["git_commit"] == head and record["git_dirty"] is False
    assert record["arguments"]["host"] == "n1"
    assert record["result"] == "ok" and record["exit_code"] == 0
    assert record["runs"] == ["20261204-180000-drain-abc123"]
    log = paths.audit_log()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


def test_a_failed_verb_is_recorded_with_its_exit_code(fake_drain: list[str], tmp_path: Path) -> None:
    inv = write_inventory(tmp_path)  # not in git: no commit recorded
    result = runner.invoke(app, ["drain", "nosuchhost", "-i", str(inv)])
    assert result.exit_code == 2 and fake_drain == []
    [record] = _records()
    assert record["verb"] == "drain" and record["result"] == "failed" and record["exit_code"] == 2
    assert "git_commit" not in record and record["runs"] == []


def test_a_crash_is_recorded_and_still_raised(isolated_state: Path) -> None:
    @audit.audited("deploy")
    def boom(inventory: Path | None = None) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        boom(inventory=None)
    [record] = _records()
    assert record["result"] == "failed" and record["exit_code"] == 1 and record["inventory"] is None


def test_secrets_on_the_command_line_or_in_the_environment_never_reach_the_record(
        isolated_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRETS["env_token"])
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD", SECRETS["vault_env"])
    password_file = tmp_path / "vault-pass"
    password_file.write_text("correct horse battery staple\n")
    weights_source = {"weights_source": {"type": "hf", "endpoint": "http://hub", "token": SECRETS["nested_token"]}}
    result = runner.invoke(app, [
        "deploy", "-i", str(tmp_path / "no-such-inventory"), "-e", f"engine_api_key={SECRETS['cli_key']}",
        "-e", json.dumps(weights_source), "-e", f"enclave_note={SECRETS['env_token']}",
        "-e", "enclave_model=sandbox-tiny", "--vault-password-file", str(password_file)])
    assert result.exit_code == 2, result.output  # the inventory does not exist: stops before any host
    text = paths.audit_log().read_text()
    for secret in [*SECRETS.values(), "correct horse"]:
        assert secret not in text, f"{secret[:8]}... reached the audit trail"
    [record] = _records()
    extra = record["arguments"]["extra_vars"]
    assert f"engine_api_key={audit.REDACTED}" in extra
    assert json.loads(extra[1])["weights_source"] == {"type": "hf", "endpoint": "http://hub",
                                                      "token": audit.REDACTED}
    assert "enclave_model=sandbox-tiny" in extra  # what is not secret stays readable
    assert record["arguments"]["vault_password_file"] == str(password_file)  # the file's name, not its content
    assert record["result"] == "failed" and record["exit_code"] == 2


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("extra_vars", ["gateway_api_keys={\"a\": \"x\"}", "hf_token=abc", "weights_revision=abc"],
     [f"gateway_api_keys={audit.REDACTED}", f"hf_token={audit.REDACTED}", "weights_revision=abc"]),
    ("extra_vars", ['{"engine": {"api_key": "k", "port": 8000}}'],
     [json.dumps({"engine": {"api_key": audit.REDACTED, "port": 8000}}, sort_keys=True)]),
    ("extra_vars", ["{not: json}"], [audit.REDACTED]),
    ("token", "abc", audit.REDACTED),
    ("ask_vault_pass", True, True),
    ("limit", "gpu01", "gpu01"),
])
def test_redact(name: str, value: Any, expected: Any) -> None:
    assert audit.redact(value, name) == expected


WRITER = """
import sys
from pathlib import Path
from enclave import audit
log, tag = Path(sys.argv[1]), sys.argv[2]
for i in range(int(sys.argv[3])):
    audit.append({"writer": tag, "i": i, "pad": tag * 3000}, log)
"""


def test_two_concurrent_writers_only_append_whole_records(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "audit.jsonl"
    audit.append({"writer": "first", "i": 0}, log)
    head = log.read_bytes()
    count = 400
    env = {"PYTHONPATH": ":".join(sys.path)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(log), tag, str(count)], env=env)
               for tag in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    data = log.read_bytes()
    assert data.startswith(head), "an earlier record was rewritten"
    records = [json.loads(line) for line in data.decode().splitlines()]  # a torn line would not parse
    assert len(records) == 1 + 2 * count
    for tag in ("a", "b"):
        assert [r["i"] for r in records if r["writer"] == tag] == list(range(count))
        assert all(r["pad"] == tag * 3000 for r in records if r["writer"] == tag)


def test_enclave_audit_shows_and_filters(isolated_state: Path) -> None:
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    audit.append(audit.make_record("deploy", {"inventory": None}, exit_code=0, runs=["r1"], when=old))
    audit.append(audit.make_record("drain", {"inventory": None, "host": "gpu01"}, exit_code=1, runs=[]))
    shown = runner.invoke(app, ["audit", "--json"])
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line)["verb"] for line in shown.output.splitlines()] == ["deploy", "drain"]
    recent = runner.invoke(app, ["audit", "--json", "--since", "1d"])
    assert [json.loads(line)["verb"] for line in recent.output.splitlines()] == ["drain"]
    only = runner.invoke(app, ["audit", "--json", "--verb", "deploy", "--since", "2025-12-31"])
    assert [json.loads(line)["runs"] for line in only.output.splitlines()] == [["r1"]]
    table = runner.invoke(app, ["audit"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "drain" in table.output and "failed (1)" in table.output
    bad = runner.invoke(app, ["audit", "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since 'yesterday'" in bad.output and "Traceback" not in bad.output


def test_each_record_is_one_write_on_an_append_only_descriptor(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes concurrent writers safe, checked directly (a race that tears records is too rare to rely on):
    O_APPEND moves to the end and writes in one step; one write(2) per record keeps it whole."""
    import os

    opened: list[int] = []
    writes: list[bytes] = []
    real_open, real_write, real_lseek = os.open, os.write, os.lseek

    def spy_open(path: Any, flags: int, *args: Any) -> int:
        opened.append(flags)
        return real_open(path, flags, *args)

    def spy_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    def no_seek(*args: Any) -> int:
        raise AssertionError("seeking before a write races with other writers; O_APPEND does it atomically")

    monkeypatch.setattr(audit.os, "open", spy_open)
    monkeypatch.setattr(audit.os, "write", spy_write)
    monkeypatch.setattr(audit.os, "lseek", no_seek)
    audit.append({"verb": "deploy", "pad": "x" * 100_000}, tmp_path / "a" / "audit.jsonl")
    monkeypatch.setattr(audit.os, "lseek", real_lseek)
    assert len(opened) == 1 and opened[0] & os.O_APPEND and not opened[0] & os.O_TRUNC
    assert len(writes) == 1 and writes[0].endswith(b"\n") and writes[0].count(b"\n") == 1


def test_a_trail_that_cannot_be_written_is_one_clear_error(fake_drain: list[str], tmp_path: Path) -> None:
    paths.audit_log().parent.parent.mkdir(parents=True)
    paths.audit_log().parent.write_text("a file where the audit directory belongs")
    result = runner.invoke(app, ["drain", "n1", "-i", str(write_inventory(tmp_path))])
    assert result.exit_code == 1 and fake_drain == ["drain n1"]  # the verb ran; its record is what failed
    assert "AuditError: drain ended with exit code 0, but its audit record could not be written" in " ".join(
        result.output.split())
    assert "Traceback" not in result.output
