"""The time windows verbs take (`--since`): one rule for `enclave audit` and `enclave usage`."""

from __future__ import annotations

import datetime as dt
import re

from enclave.errors import UsageError

_AGO = re.compile(r"([1-9][0-9]{0,5})([mhd])")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`30m`, `12h`, `7d` ago, or an ISO date/time (UTC unless it says otherwise)."""
    now = now or dt.datetime.now(dt.UTC)
    if ago := _AGO.fullmatch(text.strip()):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[ago.group(2)]
        return now - dt.timedelta(**{unit: int(ago.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text[:40]!r}: give 30m, 12h, 7d or an ISO date/time (2026-12-04T18:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
