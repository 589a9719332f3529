"""Filters for the gateway's client keys (templates/gateway/api-keys.map.j2).

A retired key (`enclave keys rotate`) stays valid until an absolute time, and must stop working then even if
nobody runs anything: nginx itself compares the request's time with the expiry. nginx has no arithmetic in its
configuration, but it has regexes over variables, and `$msec` is the request's time as seconds since the epoch:
ten digits (from 2001 to 2286), a dot, milliseconds. A fixed-width number is below E exactly when, at the first
digit where it differs from E, its digit is smaller; so "below E" is one regex of at most ten alternatives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ansible.errors import AnsibleFilterError

WIDTH = 10  # digits of the epoch seconds nginx's $msec carries until the year 2286


def _epoch(value: Any) -> int:
    try:
        epoch = int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"{value!r} is not a time in seconds since the epoch") from None
    if not 10 ** (WIDTH - 1) <= epoch < 10**WIDTH:
        raise AnsibleFilterError(f"{epoch} is not a time in seconds since the epoch between 2001 and 2286")
    return epoch


def before_regex(value: Any) -> str:
    """A regex (no anchors, no backslashes) matching the ten-digit epoch seconds strictly before `value`."""
    digits = str(_epoch(value))
    alternatives = []
    for i, digit in enumerate(digits):
        if digit == "0":
            continue
        rest = WIDTH - i - 1
        smaller = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
        alternatives.append(digits[:i] + smaller + (f"[0-9]{{{rest}}}" if rest else ""))
    return "(?:" + "|".join(alternatives) + ")"


def utc_time(value: Any) -> str:
    """The epoch seconds as an ISO 8601 UTC time, for a comment a person reads."""
    return datetime.fromtimestamp(_epoch(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"enclave_before_epoch_regex": before_regex, "enclave_utc_time": utc_time}
