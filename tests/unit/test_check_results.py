"""Reading a real `enclave verify` JUnit report (recorded on sandbox hosts with two faults injected)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from enclave.checks.results import as_json, parse_junit, summary

REPORT = Path(__file__).parent / "fixtures" / "junit" / "verify-two-faults.xml"


def test_every_check_is_read_with_host_and_concern() -> None:
    results = parse_junit(REPORT)
    assert len(results) == 23
    assert {r.host for r in results} == {"gateway", "node1", "node2"}
    assert {r.concern for r in results} == {"base", "nvidia"}
    assert not [r for r in results if r.host == "gateway" and r.concern == "nvidia"], "nvidia runs on nodes only"


def test_failures_name_host_and_cause() -> None:
    failed = {(r.host, r.check): r.message for r in parse_junit(REPORT) if r.outcome == "failed"}
    assert failed == {
        ("node1", "contract_directories"): "/etc/enclave is root:enclave 0777, should be root:enclave 0750",
        ("node2", "time_sync"): "chrony is not running",
    }


def test_skips_keep_their_reason() -> None:
    skipped = [r for r in parse_junit(REPORT) if r.outcome == "skipped"]
    assert {r.message for r in skipped} == {
        "the inventory sets enclave_gpu: none",
        "inside a container the kernel is the host's: the file is checked, the running values are not"}


def test_counts_match_what_junit_itself_says() -> None:
    suite = ET.parse(REPORT).getroot().find("testsuite")  # noqa: S314 - a fixture of our own
    assert suite is not None
    counts = summary(parse_junit(REPORT))
    assert counts["failed"] == int(suite.get("failures", 0))
    assert counts["skipped"] == int(suite.get("skipped", 0))
    assert counts["error"] == int(suite.get("errors", 0))
    assert sum(counts.values()) == int(suite.get("tests", 0))
    assert as_json(parse_junit(REPORT))["summary"] == {"passed": 12, "failed": 2, "skipped": 9, "error": 0}


def test_a_passed_check_keeps_the_message_it_recorded(tmp_path: Path) -> None:
    # What pytest writes for a check that appended ("message", ...) to its user_properties (a measured value).
    report = tmp_path / "verify.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" tests="2">'
        '<testcase classname="enclave.checks.test_engine" name="test_engine_unit_is_confined[ansible://node1]">'
        '<properties><property name="message" value="enclave-engine.service on node1: exposure 1.4 (limit 2)" />'
        '</properties></testcase>'
        '<testcase classname="enclave.checks.test_base" name="test_time_sync[ansible://node1]" />'
        '</testsuite></testsuites>')
    results = {r.check: r for r in parse_junit(report)}
    assert results["engine_unit_is_confined"].outcome == "passed"
    assert results["engine_unit_is_confined"].message == "enclave-engine.service on node1: exposure 1.4 (limit 2)"
    assert results["time_sync"].message == ""
