"""`verify`: a weights directory against its manifest, trusting stamps for files unchanged since they were hashed."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .common import require_dir
from .manifest import FileEntry, Manifest, read_manifest
from .stamps import load_stamps, make_stamp, save_stamps, stamp_vouches
from .tree import default_jobs, hash_many, walk_tree


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # missing | extra | not-regular | size | sha256 | unreadable | changed
    expected: int | str | None = None
    actual: int | str | None = None

    def describe(self) -> str:
        texts = {
            "missing": "missing",
            "extra": "extra file, not in the manifest",
            "not-regular": "not a regular file",
            "size": f"size mismatch: expected {self.expected} bytes, found {self.actual}",
            "sha256": f"sha256 mismatch: expected {self.expected}, found {self.actual}",
            "unreadable": f"cannot be read: {self.actual}",
            "changed": "changed while it was being hashed",
        }
        return f"{self.path}: {texts[self.kind]}"


@dataclass
class VerifyReport:
    files: int
    total_bytes: int
    files_hashed: int = 0
    files_from_stamps: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    stamps_saved: bool = True
    stamp_error: str | None = None
    bytes_to_fetch: int = 0  # what is missing from the listed files: the free space a repair needs at most

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["seconds"] = round(self.seconds, 3)
        data["bytes_per_second"] = int(self.bytes_hashed / self.seconds) if self.seconds > 0 else None
        return data


def verify_tree(directory: Path, *, deep: bool = False, jobs: int | None = None,
                manifest: Manifest | None = None) -> VerifyReport:
    """Check `directory` against its manifest: every listed file present with the right size and sha256, nothing
    else. Files whose stamp still matches are trusted unless `deep`."""
    require_dir(directory)
    manifest = manifest or read_manifest(directory)
    tree = walk_tree(directory)
    old_stamps = {} if deep else load_stamps(directory)
    report = VerifyReport(files=manifest.files, total_bytes=manifest.total_bytes)
    listed = {e.path for e in manifest.entries}
    report.problems += [Problem(rel, "extra") for rel in tree.files if rel not in listed]
    report.problems += [Problem(rel, "not-regular") for rel in tree.others if rel not in listed]

    stamps: dict[str, dict[str, Any]] = {}
    to_hash: list[FileEntry] = []
    for entry in manifest.entries:
        st = tree.files.get(entry.path)
        if st is None:
            kind = "not-regular" if entry.path in tree.others else "missing"
            report.problems.append(Problem(entry.path, kind))
        elif st.st_size != entry.size:
            report.problems.append(Problem(entry.path, "size", entry.size, st.st_size))
        elif stamp_vouches(old_stamps.get(entry.path), st, entry):
            stamps[entry.path] = old_stamps[entry.path]
            report.files_from_stamps += 1
        else:
            to_hash.append(entry)

    started = time.monotonic()
    results = hash_many(directory, [e.path for e in sorted(to_hash, key=lambda e: -e.size)], jobs or default_jobs())
    report.seconds = time.monotonic() - started
    for entry in to_hash:
        _judge_hashed(directory, entry, tree.files[entry.path], results[entry.path], report, stamps)
    report.problems.sort(key=lambda p: (p.path, p.kind))
    sizes = {e.path: e.size for e in manifest.entries}
    for problem in report.problems:
        if problem.path in sizes:
            st = tree.files.get(problem.path)
            present = st.st_size if st is not None and problem.kind != "sha256" else 0
            report.bytes_to_fetch += max(sizes[problem.path] - present, 0)
    try:
        save_stamps(directory, stamps)
    except OSError as e:
        # A read-only directory still verifies; the next run just hashes again.
        report.stamps_saved, report.stamp_error = False, f"{e.strerror}"
    return report


def _judge_hashed(directory: Path, entry: FileEntry, before: os.stat_result, result: tuple[int, str] | OSError,
                  report: VerifyReport, stamps: dict[str, dict[str, Any]]) -> None:
    if isinstance(result, OSError):
        report.problems.append(Problem(entry.path, "unreadable", actual=result.strerror))
        return
    size, sha = result
    report.files_hashed += 1
    report.bytes_hashed += size
    if sha != entry.sha256:
        report.problems.append(Problem(entry.path, "sha256", entry.sha256, sha))
        return
    stamp = make_stamp(directory / entry.path, before, size, sha)
    if stamp is None:
        report.problems.append(Problem(entry.path, "changed"))
    elif stamp:
        stamps[entry.path] = stamp
