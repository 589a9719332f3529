"""Stamps: a cache of sha256 by (size, mtime_ns, ctime_ns, inode), so reruns need not rehash unchanged files. ctime
is in the key because mtime is not evidence: anyone may write a file and put its old mtime back (os.utime), but
the kernel moves ctime on every write, utime, chmod or rename, and nothing but a clock change can set it back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .common import SHA256_RE, STAMPS_NAME, write_atomic
from .manifest import FileEntry

# A stamp is only trusted if the file was last written at least this long before the stamp was taken. Filesystems
# keep mtimes at coarse granularity (a kernel tick, 1 s on ext3 and some NFS servers, 2 s on FAT), so a file
# rewritten right after stamping could otherwise keep its old mtime, size and inode and skip the rehash.
RACY_WINDOW_NS = 3_000_000_000
STAMP_KEY = ("size", "mtime_ns", "ctime_ns", "inode")


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What a stamp must match, in STAMP_KEY's order. A cache written before ctime joined the key fails
    _stamp_is_valid and is dropped: the first verify after that upgrade rehashes once."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def load_stamps(directory: Path) -> dict[str, dict[str, Any]]:
    """Read the stamp cache; being only a cache, anything unreadable or malformed is dropped, never trusted."""
    try:
        data = json.loads((directory / STAMPS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {rel: s for rel, s in data.items() if _stamp_is_valid(s)}


def _stamp_is_valid(stamp: Any) -> bool:
    if not isinstance(stamp, dict) or set(stamp) != {*STAMP_KEY, "sha256"}:
        return False
    ints = all(type(stamp[k]) is int for k in STAMP_KEY)
    return ints and isinstance(stamp["sha256"], str) and SHA256_RE.fullmatch(stamp["sha256"]) is not None


def save_stamps(directory: Path, stamps: dict[str, dict[str, Any]]) -> None:
    write_atomic(directory / STAMPS_NAME, (json.dumps(stamps, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def make_stamp(path: Path, before: os.stat_result, size: int, sha: str) -> dict[str, Any] | None:
    """A stamp for a file just hashed; {} when it is too fresh to stamp safely; None when it changed meanwhile."""
    try:
        after = os.lstat(path)
    except OSError:
        return None
    same = stat_key(before) == stat_key(after)
    if not same or size != after.st_size:
        return None
    if time.time_ns() - after.st_mtime_ns < RACY_WINDOW_NS:
        return {}
    return {**dict(zip(STAMP_KEY, stat_key(after), strict=True)), "sha256": sha}


def stamp_vouches(stamp: dict[str, Any] | None, st: os.stat_result, entry: FileEntry) -> bool:
    if stamp is None:
        return False
    same_file = tuple(stamp[k] for k in STAMP_KEY) == stat_key(st)
    return same_file and stamp["sha256"] == entry.sha256
