"""The gateway's access-log accounting (src/enclave/hosttools/accesslog.py) and the usage counters the signals tool
exports from it: records read once each across runs, a line nginx is still writing left for the next run,
rotation (logrotate's `.1`) and truncation, window sums over rotated and compressed copies, and the counters'
text checked by promtool. The records come in nginx's `enclave` log_format (test_gateway_usage reads ones a real
nginx wrote)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

from enclave.hosttools import accesslog, signals
from tests.unit.test_hosttools import install_copy
from tests.unit.test_monitoring_signals import promtool_check_metrics

REPO = Path(__file__).resolve().parents[2]


def line(client: str, prompt: int, completion: int, *, status: int = 200, model: str = "org/tiny",
         time: str = "2026-12-05T07:00:00+00:00") -> str:
    return json.dumps({"time": time, "request_id": "r", "client": client, "remote": "10.0.0.1", "method": "POST",
                       "path": "/v1/chat/completions", "status": status, "bytes_sent": 10, "request_time": 0.1,
                       "upstream": "10.0.0.2:8000", "upstream_status": "200", "upstream_time": "0.1",
                       "model": model, "prompt_tokens": prompt, "completion_tokens": completion}) + "\n"


def test_records_are_counted_once_and_a_half_written_line_waits(tmp_path: Path) -> None:
    log, state = tmp_path / "enclave-access.log", tmp_path / ".state.json"
    log.write_text(line("a", 10, 5) + line("b", 7, 0, status=429, model=""))
    tally = accesslog.read_new(log, state)
    assert tally.tokens == {("a", "org/tiny", "prompt"): 10, ("a", "org/tiny", "completion"): 5,
                            ("b", "", "prompt"): 7, ("b", "", "completion"): 0}
    assert tally.requests == {("a", "org/tiny", "200"): 1, ("b", "", "429"): 1}
    whole = line("a", 1, 2)
    with log.open("a") as handle:
        handle.write(whole[:30])  # nginx is in the middle of writing this record
    assert accesslog.read_new(log, state).tokens[("a", "org/tiny", "prompt")] == 10
    with log.open("a") as handle:
        handle.write(whole[30:])
    tally = accesslog.read_new(log, state)
    assert tally.tokens[("a", "org/tiny", "prompt")] == 11 and tally.requests[("a", "org/tiny", "200")] == 2
    assert accesslog.read_new(log, state).tokens == tally.tokens, "a record was counted twice"


def test_rotation_finishes_the_old_file_and_truncation_starts_over(tmp_path: Path) -> None:
    log, state = tmp_path / "enclave-access.log", tmp_path / ".state.json"
    log.write_text(line("a", 10, 5))
    accesslog.read_new(log, state)
    with log.open("a") as handle:
        handle.write(line("a", 100, 50))  # written after the last read, before logrotate moved the file
    log.rename(tmp_path / "enclave-access.log.1")
    log.write_text(line("a", 1000, 500))
    tally = accesslog.read_new(log, state)
    assert tally.tokens[("a", "org/tiny", "prompt")] == 1110
    assert tally.tokens[("a", "org/tiny", "completion")] == 555
    log.write_text(line("a", 1, 1))  # truncated in place, as copytruncate does
    assert accesslog.read_new(log, state).tokens[("a", "org/tiny", "prompt")] == 1111


def test_unreadable_lines_are_skipped(tmp_path: Path) -> None:
    log, state = tmp_path / "enclave-access.log", tmp_path / ".state.json"
    log.write_text("not json\n" + '{"time": "yesterday"}\n' + line("a", 3, 4) + "\n")
    assert accesslog.read_new(log, state).tokens[("a", "org/tiny", "completion")] == 4


def test_sums_cover_rotated_and_compressed_copies_within_the_window(tmp_path: Path) -> None:
    log = tmp_path / "enclave-access.log"
    with gzip.open(tmp_path / "enclave-access.log.2.gz", "wt") as handle:
        handle.write(line("a", 1, 1, time="2026-12-01T00:00:00+00:00") + line("a", 2, 2, time="2026-12-03T00:00:00Z"))
    (tmp_path / "enclave-access.log.1").write_text(line("b", 30, 3, time="2026-12-04T00:00:00+00:00"))
    log.write_text(line("a", 400, 40) + line("b", 5, 0, status=401, model=""))
    since = accesslog.dt.datetime.fromisoformat("2026-12-02T00:00:00+00:00").timestamp()
    result = accesslog.sums(accesslog.log_files(log, 0), since)
    assert result["clients"] == {
        "a": {"org/tiny": {"requests": 2, "prompt_tokens": 402, "completion_tokens": 42}},
        "b": {"org/tiny": {"requests": 1, "prompt_tokens": 30, "completion_tokens": 3},
              "": {"requests": 1, "prompt_tokens": 5, "completion_tokens": 0}}}
    assert result["records"] == 4
    # A copy last written before the window is not opened at all.
    old = tmp_path / "enclave-access.log.2.gz"
    os.utime(old, (since - 10, since - 10))
    assert old not in accesslog.log_files(log, since)


def test_the_counters_are_rendered_with_labels_apart_from_the_targets_and_promtool_accepts_them(
        tmp_path: Path) -> None:
    log = tmp_path / "enclave-access.log"
    log.write_text(line("team-a", 12, 34) + line("", 0, 0, status=401, model=""))
    out = tmp_path / "textfile"
    out.mkdir()
    assert signals.main(["--out", str(out), "--access-log", str(log),
                         "--access-state", str(out / ".enclave-usage-state.json")]) == 0
    text = (out / signals.OUT_NAME).read_text()
    for expected in ['enclave_gateway_tokens_total{client="team-a",kind="prompt",model="org/tiny"} 12',
                     'enclave_gateway_tokens_total{client="team-a",kind="completion",model="org/tiny"} 34',
                     'enclave_gateway_requests_total{client="team-a",model="org/tiny",status="200"} 1',
                     'enclave_gateway_requests_total{client="",model="",status="401"} 1',
                     'enclave_signals_error{source="usage"} 0']:
        assert expected in text.splitlines(), expected
    proc = promtool_check_metrics(text)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [".enclave-usage-state.json", signals.OUT_NAME]


def test_an_unreadable_log_is_a_flagged_source(tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    assert signals.main(["--out", str(out), "--access-log", str(tmp_path / "missing.log"),
                         "--access-state", str(out / ".state")]) == 0
    assert 'enclave_signals_error{source="usage"} 1' in (out / signals.OUT_NAME).read_text()
    assert signals.main(["--out", str(out), "--access-log", str(tmp_path / "x.log")]) == 2


def test_the_tools_run_as_installed_on_a_host_without_the_enclave_package(tmp_path: Path) -> None:
    """The enclave role installs hosttools/ (signals.py imports accesslog.py from it); the gateway role sends
    accesslog.py alone with the script module. Here: the system's python3, which has no enclave package."""
    tools = install_copy(tmp_path / "opt")
    alone = tmp_path / "sent"
    alone.mkdir()
    shutil.copy(tools / "accesslog.py", alone / "accesslog.py")
    log = tmp_path / "enclave-access.log"
    log.write_text(line("a", 3, 4))
    out = tmp_path / "textfile"
    out.mkdir()
    python = "/usr/bin/python3"
    assert subprocess.run([python, "-c", "import enclave"], capture_output=True, check=False).returncode != 0
    proc = subprocess.run([python, str(tools / "signals.py"), "--out", str(out), "--access-log", str(log),
                           "--access-state", str(out / ".s")], capture_output=True, text=True, check=False,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert 'enclave_gateway_tokens_total{client="a",kind="completion",model="org/tiny"} 4' in \
        (out / signals.OUT_NAME).read_text()
    proc = subprocess.run([python, str(alone / "accesslog.py"), "sums",
                           "--log", str(log), "--since", "0"], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clients"] == {
        "a": {"org/tiny": {"requests": 1, "prompt_tokens": 3, "completion_tokens": 4}}}
