"""Reading nvidia-smi's output: the CSV query, the summary table, and its failure messages.

Tested against outputs recorded on real machines (tests/unit/fixtures/nvidia-smi). Parsing is lenient about
layout (the summary table's columns moved between driver branches) and strict about meaning: a value it cannot
read is None, never a guess.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int | None
    uuid: str | None = None
    bus_id: str | None = None
    persistence: bool | None = None


@dataclass(frozen=True)
class SmiFailure:
    code: str  # driver-unreachable | no-devices | nvml-mismatch | failed
    message: str
    hint: str


@dataclass(frozen=True)
class SmiReading:
    gpus: tuple[Gpu, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    failure: SmiFailure | None = None


_FAILURES = (
    (re.compile(r"Driver/library version mismatch", re.I), "nvml-mismatch",
     "the loaded kernel module and the installed driver libraries differ (the driver was upgraded without a "
     "reboot); reboot the host"),
    (re.compile(r"couldn't communicate with the NVIDIA driver", re.I), "driver-unreachable",
     "the NVIDIA kernel module is not loaded: check `dmesg | grep -i nvidia`; a kernel updated without DKMS "
     "rebuilding the module, or Secure Boot refusing it, are the usual causes"),
    (re.compile(r"No devices were found", re.I), "no-devices",
     "the driver loaded but claims no GPU: often the wrong kernel module flavour (the open module does not "
     "support pre-Turing GPUs; Blackwell needs the open one), see nvidia_kernel_module"),
)


def classify_failure(text: str) -> SmiFailure | None:
    for pattern, code, hint in _FAILURES:
        if pattern.search(text):
            line = next((ln.strip() for ln in text.splitlines() if pattern.search(ln)), text.strip())
            return SmiFailure(code, line, hint)
    return None


def _int(value: str) -> int | None:
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match else None


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value in ("", "N/A", "[N/A]", "[Not Supported]", "Not Supported") else value


def _column(header: str) -> str:
    # "memory.total [MiB]" -> "memory.total"; field names are case-insensitive in nvidia-smi
    return header.split("[")[0].strip().lower()


def parse_query_csv(text: str) -> list[dict[str, str]]:
    """Rows of `nvidia-smi --query-gpu=... --format=csv` (header line required) as dicts keyed by field."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True))
    header = [_column(h) for h in rows[0]]
    if "name" not in header and "index" not in header:
        raise ValueError(f"not an nvidia-smi CSV query with a header: {lines[0][:80]!r}")
    return [dict(zip(header, (c.strip() for c in row), strict=False)) for row in rows[1:] if len(row) == len(header)]


def gpus_from_query(rows: list[dict[str, str]]) -> list[Gpu]:
    gpus = []
    for position, row in enumerate(rows):
        persistence = _text(row.get("persistence_mode"))
        gpus.append(Gpu(
            index=_int(row.get("index", "")) if _int(row.get("index", "")) is not None else position,
            name=_text(row.get("name")) or "unknown",
            memory_mib=_int(row.get("memory.total", "")),
            uuid=_text(row.get("uuid")),
            bus_id=_text(row.get("pci.bus_id")),
            persistence=None if persistence is None else persistence.lower() == "enabled",
        ))
    return gpus


# Branch 610 renamed the header fields: "KMD Version" (the kernel driver) and "CUDA UMD Version".
_HEADER = re.compile(r"NVIDIA-SMI\s+(?P<smi>[\w.]+).*?(?:Driver|KMD) Version:\s*(?P<driver>[\w.]+)"
                     r"(?:.*?CUDA (?:UMD )?Version:\s*(?P<cuda>[\w./]+))?")
# "|   0  NVIDIA H200                    On  |   00000000:18:00.0 Off |" (the name column is padded; newer
# branches put "On"/"Off" for persistence at its end, older ones too, with different widths)
_GPU_ROW = re.compile(r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s+(?P<persistence>On|Off)\s+\|"
                      r"\s*(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])")
_MEMORY = re.compile(r"(?P<used>\d+)\s*MiB\s*/\s*(?P<total>\d+)\s*MiB")


def parse_summary(text: str) -> SmiReading:
    """The plain `nvidia-smi` table: driver and CUDA versions, and each GPU's name and memory."""
    failure = classify_failure(text)
    header = _HEADER.search(text)
    gpus: list[Gpu] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        row = _GPU_ROW.match(line)
        if not row:
            continue
        memory = None
        for follow in lines[number + 1: number + 3]:
            found = _MEMORY.search(follow)
            if found:
                memory = int(found.group("total"))
                break
        gpus.append(Gpu(index=int(row.group("index")), name=row.group("name").strip(), memory_mib=memory,
                        bus_id=row.group("bus"), persistence=row.group("persistence") == "On"))
    return SmiReading(
        gpus=tuple(gpus),
        driver_version=header.group("driver") if header else None,
        cuda_version=(header.group("cuda") if header and header.group("cuda") not in (None, "N/A") else None),
        failure=failure,
    )


def reading(query: dict | None, summary: dict | None) -> SmiReading | None:
    """Combine the two runs the facts module makes (each: present, rc, stdout, stderr).

    None when nvidia-smi is not installed. The CSV query is authoritative for GPUs; the summary adds the
    CUDA version the query cannot report on every branch.
    """
    query, summary = query or {}, summary or {}
    if not query.get("present") and not summary.get("present"):
        return None
    for run in (query, summary):
        if run.get("present") and run.get("rc") not in (0, None):
            said = f"{run.get('stdout', '')}\n{run.get('stderr', '')}"
            failure = classify_failure(said) or SmiFailure(
                "failed", " ".join(said.split())[:200] or f"exit code {run.get('rc')}",
                "nvidia-smi failed; run it on the host for details")
            return SmiReading(failure=failure)
    table = parse_summary(summary.get("stdout", "")) if summary.get("present") else SmiReading()
    rows = parse_query_csv(query.get("stdout", "")) if query.get("present") else []
    gpus = tuple(gpus_from_query(rows))
    driver = next((r["driver_version"] for r in rows if _text(r.get("driver_version"))), table.driver_version)
    return SmiReading(gpus=gpus or table.gpus, driver_version=driver, cuda_version=table.cuda_version,
                      failure=table.failure)
