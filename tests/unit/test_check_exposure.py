"""Reading `systemd-analyze security` as the confinement checks do, from the real tool's output, and their verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from enclave.checks.exposure import Exposure, judge, parse
from tests.host_tools import require_tool

UNIT = "[Service]\nExecStart=/bin/true\nDynamicUser=yes\nPrivateDevices=yes\nProtectSystem=strict\n"


def test_reads_the_score_and_the_costliest_gaps_from_the_real_tool(tmp_path: Path) -> None:
    require_tool("systemd-analyze")
    path = tmp_path / "probe.service"
    path.write_text(UNIT)
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
                         capture_output=True, text=True, check=False).stdout
    exposure = parse(out)
    assert exposure is not None, out
    assert 0 < exposure.score < 10
    assert f"Overall exposure level for probe.service: {exposure.score:.1f}" in out
    # PrivateNetwork= (0.5) is the heaviest setting this unit lacks
    assert exposure.costliest[0] == "PrivateNetwork= (0.5)", exposure.costliest
    assert "PrivateDevices=" not in " ".join(exposure.costliest)


def test_no_score_is_none() -> None:
    assert parse("Failed to connect to bus: No such file or directory") is None


class _Node:
    def __init__(self) -> None:
        self.user_properties: list[tuple[str, Any]] = []


class _Request:
    def __init__(self) -> None:
        self.node = _Node()


def test_judge_passes_with_the_score_and_fails_naming_host_unit_score() -> None:
    request = _Request()
    judge(request, "node1", "enclave-engine.service", Exposure(1.4, ("PrivateNetwork= (0.5)",)), 2.0)
    assert request.node.user_properties == [("message", "enclave-engine.service on node1: exposure 1.4 (limit 2)")]
    with pytest.raises(AssertionError, match=r"^enclave-engine\.service on node2: exposure 4\.8 \(limit 2\): too "
                                             r"exposed; the costliest missing settings: PrivateNetwork= \(0\.5\)"):
        judge(_Request(), "node2", "enclave-engine.service", Exposure(4.8, ("PrivateNetwork= (0.5)",)), 2.0)
