"""`systemd-analyze security` of a unit on a host: its overall exposure (0 safest, 10 unconfined) and the settings
that cost the most, for the checks that hold the kit's units to their limits (docs/security.md, "Hardening scores")."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

_OVERALL = re.compile(r"Overall exposure level for \S+: (?P<score>\d+(?:\.\d+)?)")
# A setting the unit lacks: "✗ Name=   description   0.2" (the weight is the last word).
_MISSING = re.compile(r"^✗\s+(?P<name>\S+)\s.*?\s(?P<weight>\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Exposure:
    score: float
    costliest: tuple[str, ...]  # the missing settings with the highest weights, highest first


def parse(output: str, top: int = 4) -> Exposure | None:
    match = _OVERALL.search(output)
    if match is None:
        return None
    missing = [(float(m.group("weight")), m.group("name")) for line in output.splitlines()
               if (m := _MISSING.match(line.strip()))]
    ranked = sorted(missing, key=lambda item: -item[0])[:top]
    return Exposure(float(match.group("score")), tuple(f"{name} ({weight:g})" for weight, name in ranked))


def unit_exposure(host: Any, unit: str) -> Exposure:
    with host.sudo():
        result = host.run(f"systemd-analyze security --no-pager {shlex.quote(unit)}")
    found = parse(result.stdout)
    assert found is not None, (f"systemd-analyze security {unit} gave no score: "
                               f"{(result.stderr or result.stdout).strip()[:200]}")
    return found


def judge(request: Any, host_name: str, unit: str, exposure: Exposure, limit: float) -> None:
    """Pass with the score in the check's message, or fail naming host, unit, score, limit and the costliest gaps."""
    text = f"{unit} on {host_name}: exposure {exposure.score:g} (limit {limit:g})"
    assert exposure.score <= limit, (f"{text}: too exposed; the costliest missing settings: "
                                     f"{', '.join(exposure.costliest) or 'none listed'}")
    # The message of a passed check (results.parse_junit reads it): the score is what an operator wants to see.
    request.node.user_properties.append(("message", text))
