"""Reading what a check run produced (its JUnit XML) into per-host, per-check results."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# [ansible://HOST] from `enclave verify`; [local] when a check runs on the machine itself (the GPU smoke check).
_ID = re.compile(r"^test_(?P<check>\w+)\[(?:ansible://(?P<host>[^\]]+)|(?P<local>local))\]$")


@dataclass(frozen=True)
class CheckResult:
    host: str
    concern: str  # the module: base, nvidia, ...
    check: str
    outcome: str  # passed | failed | skipped | error
    message: str = ""


def _message(node: ET.Element) -> str:
    text = node.get("message") or node.text or ""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return re.sub(r"^(AssertionError|Failed|Skipped): ", "", first)[:500]


def parse_junit(path: Path) -> list[CheckResult]:
    results = []
    # Our own pytest wrote this file; it is not untrusted input.
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        match = _ID.match(case.get("name", ""))
        concern = (case.get("classname") or "").rsplit(".", 1)[-1].removeprefix("test_")
        host, check = ((match.group("host") or match.group("local"), match.group("check")) if match
                       else ("-", case.get("name", "?")))
        # A passed check may leave a message of its own (a measured value) as the junit property "message".
        prop = case.find("properties/property[@name='message']")
        outcome, message = "passed", (prop.get("value", "") if prop is not None else "")[:500]
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome, message = name, _message(node)
                break
        results.append(CheckResult(host, concern, check, outcome, message))
    return results


def summary(results: list[CheckResult]) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for result in results:
        counts[result.outcome] += 1
    return counts


def as_json(results: list[CheckResult]) -> dict[str, Any]:
    """The documented shape of `enclave verify --json` (docs/runbooks/verify.md)."""
    return {"summary": summary(results), "results": [asdict(r) for r in results]}
