"""`nvidia-smi --query-gpu=... --format=csv` as `enclave status` reads it (pure functions).

Parsed by the header, not by position, so `--format=csv,nounits` and other column orders read the same; values
such as "[N/A]" (a field the GPU does not report) become None.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

# The query the status probe runs on a host (src/enclave/hosttools/engine_status.py).
QUERY_FIELDS = ("index", "name", "memory.used", "memory.total", "utilization.gpu")
_HEADER = re.compile(r"^\s*(?P<field>[a-z_.]+)(?:\s*\[[^\]]*\])?\s*$")
_NUMBER = re.compile(r"^\s*(?P<n>-?\d+(?:\.\d+)?)\s*(?:MiB|%|W|MHz|C)?\s*$")


@dataclass(frozen=True)
class GpuReading:
    index: int | None
    name: str
    memory_used_mib: float | None
    memory_total_mib: float | None
    utilization_pct: float | None


class GpuCsvError(ValueError):
    """The text is not nvidia-smi's CSV (an error message, a table, nothing)."""


def _number(value: str | None) -> float | None:
    match = _NUMBER.match(value or "")
    return float(match.group("n")) if match else None


def parse_gpu_csv(text: str) -> list[GpuReading]:
    rows = [r for r in csv.reader(io.StringIO(text.strip()), skipinitialspace=True) if r]
    if not rows:
        raise GpuCsvError("nvidia-smi printed nothing")
    fields = []
    for cell in rows[0]:
        match = _HEADER.match(cell)
        if not match:
            raise GpuCsvError(f"not an nvidia-smi CSV header: {','.join(rows[0])[:120]}")
        fields.append(match.group("field"))
    if "memory.used" not in fields and "utilization.gpu" not in fields:
        raise GpuCsvError(f"the CSV has neither memory.used nor utilization.gpu: {', '.join(fields)}")
    readings = []
    for row in rows[1:]:
        if len(row) != len(fields):
            raise GpuCsvError(f"a row has {len(row)} fields, the header {len(fields)}: {','.join(row)[:120]}")
        cell = dict(zip(fields, (c.strip() for c in row), strict=True))
        index = _number(cell.get("index"))
        readings.append(GpuReading(
            index=int(index) if index is not None else None, name=cell.get("name", "?"),
            memory_used_mib=_number(cell.get("memory.used")), memory_total_mib=_number(cell.get("memory.total")),
            utilization_pct=_number(cell.get("utilization.gpu"))))
    return readings
