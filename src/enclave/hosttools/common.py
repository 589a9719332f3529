"""What a weights directory holds besides the model, and small helpers every weights module uses."""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from pathlib import Path

from .errors import InputError

MANIFEST_NAME = "MANIFEST.sha256"
SIGNATURE_NAME = MANIFEST_NAME + ".sig"
STAMPS_NAME = ".enclave-stamps.json"
ACTIVATIONS_NAME = ".enclave-activations.json"
CURRENT_LINK = "current"
TMP_PREFIX = ".enclave-tmp-"  # our own half-written files; never part of the model
HUB_CLIENT_DIR = ".cache"  # huggingface_hub's bookkeeping in a local_dir download (.cache/huggingface/...)
PARTIAL_SUFFIXES = (".incomplete", ".partial")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime(TIMESTAMP_FORMAT)


def gb(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB"


def human(n: int | float) -> str:
    """Decimal units, as disks and NICs are sold, so numbers compare with `df -H` and link rates."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def has_control_chars(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def path_problem(rel: str) -> str | None:
    """Why `rel` cannot be a manifest path, or None.

    sha256sum escapes names with a backslash or newline (and, in newer coreutils, a carriage return) in a way this
    format does not carry, and a manifest must never point outside its directory.
    """
    if not rel:
        return "empty path"
    if "\n" in rel or "\\" in rel:
        return "newlines and backslashes are not allowed in file names"
    if has_control_chars(rel):
        return "control characters are not allowed in file names"
    if rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")):
        return "not a plain relative path"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    return None


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temp file in the same directory and rename, so readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename durable: without this a power cut can bring back the old name after a reported success."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_dir(path: Path, what: str = "directory") -> None:
    if not path.is_dir():
        raise InputError(f"{what} {path} does not exist or is not a directory")



def is_own_file(rel: str) -> bool:
    """Files this tool keeps next to the model: they are never hashed into, or checked against, the manifest."""
    return rel in (MANIFEST_NAME, SIGNATURE_NAME, STAMPS_NAME, HUB_CLIENT_DIR) or rel.startswith(TMP_PREFIX)
