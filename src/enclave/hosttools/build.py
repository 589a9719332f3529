"""`manifest build`: hash a weights directory, check it against what its source promised, write its manifest."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    MANIFEST_NAME,
    PARTIAL_SUFFIXES,
    SHA256_RE,
    SIGNATURE_NAME,
    TIMESTAMP_FORMAT,
    has_control_chars,
    path_problem,
    require_dir,
    utc_now,
    write_atomic,
)
from .errors import CheckFailed, InputError
from .manifest import FileEntry, Manifest, render_manifest
from .stamps import make_stamp, save_stamps
from .tree import Tree, default_jobs, hash_many, walk_tree

LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt")
FIRST_LINE_MAX = 200
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class BuildResult:
    manifest: Manifest
    license_file: str
    bytes_hashed: int
    seconds: float
    removed_stale_signature: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.manifest.summary(), "license_file": self.license_file, "bytes_hashed": self.bytes_hashed,
                "seconds": round(self.seconds, 3), "removed_stale_signature": self.removed_stale_signature}


def find_license(directory: Path) -> str | None:
    for name in LICENSE_NAMES:
        if (directory / name).is_file():
            return name
    return None


def license_first_line(path: Path) -> str:
    """The first non-empty line, printable and short, so it fits on one header line."""
    with path.open("rb") as f:
        text = f.read(1024 * 1024).decode("utf-8", errors="replace")
    for line in text.splitlines():
        clean = "".join(c if c.isprintable() else " " for c in line).strip()
        if clean:
            return clean[:FIRST_LINE_MAX].strip()
    raise InputError(f"{path} is empty; the weights' license text must travel with them")


def place_license(directory: Path, license_file: Path) -> None:
    """Copy an operator-supplied license text to DIR/LICENSE; never silently replace a different one already there."""
    try:
        text = license_file.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read --license-file {license_file}: {e.strerror}") from e
    target = directory / "LICENSE"
    if target.exists():
        if target.read_bytes() == text:
            return
        raise InputError(f"{target} already exists with other text; remove it or drop --license-file")
    write_atomic(target, text)


def check_provenance(repo: str, revision: str, source: str, fetched_at: str) -> None:
    """Refuse header values that would not survive the one-line-per-field format, or would not parse back."""
    if not REPO_RE.fullmatch(repo):
        raise InputError(f"--repo must look like ORG/NAME, not {repo!r}")
    for name, value in (("revision", revision), ("source", source)):
        if not value.strip() or has_control_chars(value):
            raise InputError(f"--{name} must be non-empty text on one line, not {value!r}")
    if any(c.isspace() for c in revision):
        raise InputError(f"--revision must not contain spaces, not {revision!r}")
    try:
        dt.datetime.strptime(fetched_at, TIMESTAMP_FORMAT)
    except ValueError as e:
        raise InputError(f"--fetched-at must look like 2026-11-28T18:00:00Z, not {fetched_at!r}") from e


def load_expectations(path: Path) -> dict[str, dict[str, Any]]:
    """Read `{path: {"sha256": ..., "size": ...}}` (what the hub's LFS metadata says); either key may be absent,
    since the hub gives non-LFS files a size but only a git blob id."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read --expect-json {path}: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"--expect-json {path} must be a JSON object mapping path -> {{sha256, size}}")
    for rel, want in data.items():
        ok = isinstance(want, dict) and want and set(want) <= {"sha256", "size"}
        ok = ok and ("sha256" not in want or (isinstance(want["sha256"], str)
                                              and SHA256_RE.fullmatch(want["sha256"].lower()) is not None))
        ok = ok and ("size" not in want or (type(want["size"]) is int and want["size"] >= 0))
        if not ok:
            raise InputError(f"--expect-json {path}: entry {rel!r} must be {{\"sha256\": <64 hex>, \"size\": <int>}}")
    return data


def check_expectations(expect: dict[str, dict[str, Any]], actual: dict[str, tuple[int, str | None]]) -> None:
    """Compare what the source promised with what arrived; `actual` sha256 may be None when only sizes are known."""
    for rel, want in expect.items():
        if rel not in actual:
            raise CheckFailed(f"{rel}: listed in --expect-json but not present", {"path": rel})
        size, sha = actual[rel]
        if "size" in want and want["size"] != size:
            raise CheckFailed(f"{rel}: size mismatch: expected {want['size']} bytes, found {size}",
                              {"path": rel, "expected_size": want["size"], "actual_size": size})
        if sha is not None and "sha256" in want and want["sha256"].lower() != sha:
            raise CheckFailed(f"{rel}: sha256 mismatch: expected {want['sha256'].lower()}, found {sha}",
                              {"path": rel, "expected_sha256": want["sha256"].lower(), "actual_sha256": sha})


def build_manifest(
    directory: Path,
    *,
    repo: str,
    revision: str,
    source: str,
    expect_json: Path | None = None,
    license_file: Path | None = None,
    fetched_at: str | None = None,
    jobs: int | None = None,
) -> BuildResult:
    """Hash every file under `directory` and write its MANIFEST.sha256 (plus stamps, so the next verify is free)."""
    require_dir(directory)
    fetched_at = fetched_at or utc_now()
    check_provenance(repo, revision, source, fetched_at)
    expect = load_expectations(expect_json) if expect_json else {}
    if license_file:
        place_license(directory, license_file)
    license_name = find_license(directory)
    if license_name is None:
        raise InputError(
            f"{directory} has no LICENSE (or LICENSE.md / LICENSE.txt): the weights' license must travel with them; "
            "add the repo's license file, or pass --license-file PATH to copy a license text to DIR/LICENSE")
    first_line = license_first_line(directory / license_name)
    tree = _checked_tree(directory)
    check_expectations(expect, {rel: (st.st_size, None) for rel, st in tree.files.items()})

    started = time.monotonic()
    results = hash_many(directory, _largest_first(tree), jobs or default_jobs())
    seconds = time.monotonic() - started
    entries, stamps = _entries_from_hashes(directory, tree, results)
    check_expectations(expect, {e.path: (e.size, e.sha256) for e in entries})

    by_path = {e.path: e for e in entries}
    manifest = Manifest(repo=repo, revision=revision, source=source, fetched_at=fetched_at,
                        license_sha256=by_path[license_name].sha256, license_first_line=first_line,
                        entries=tuple(entries))
    write_atomic(directory / MANIFEST_NAME, render_manifest(manifest).encode("utf-8"))
    # A signature over the previous manifest can only fail now; leaving it would suggest the new one was signed.
    signature = directory / SIGNATURE_NAME
    stale = signature.exists()
    signature.unlink(missing_ok=True)
    save_stamps(directory, stamps)
    return BuildResult(manifest, license_name, sum(e.size for e in entries), seconds, stale)


def _checked_tree(directory: Path) -> Tree:
    tree = walk_tree(directory)
    if tree.others:
        raise InputError(f"{directory / tree.others[0]} is not a regular file (symlinks, devices and sockets are "
                         "not carried); replace it with the file itself or remove it")
    partial = [rel for rel in tree.files if rel.endswith(PARTIAL_SUFFIXES)]
    if partial:
        raise InputError(f"{directory} holds {len(partial)} partial download(s), e.g. {partial[0]}; "
                         "finish or remove them before building a manifest")
    for rel in tree.files:
        problem = path_problem(rel)
        if problem:
            raise InputError(f"cannot list {rel!r} in a manifest: {problem}")
    return tree


def _largest_first(tree: Tree) -> list[str]:
    """Start the big shards first, so one large file does not start last and leave the other cores idle."""
    return sorted(tree.files, key=lambda rel: -tree.files[rel].st_size)


def _entries_from_hashes(
    directory: Path, tree: Tree, results: dict[str, tuple[int, str] | OSError]
) -> tuple[list[FileEntry], dict[str, dict[str, Any]]]:
    entries: list[FileEntry] = []
    stamps: dict[str, dict[str, Any]] = {}
    for rel, before in tree.files.items():
        result = results[rel]
        if isinstance(result, OSError):
            raise InputError(f"cannot read {directory / rel}: {result.strerror}")
        size, sha = result
        stamp = make_stamp(directory / rel, before, size, sha)
        if stamp is None:
            raise InputError(f"{directory / rel} changed while it was being hashed; wait for writers to finish")
        entries.append(FileEntry(rel, size, sha))
        if stamp:
            stamps[rel] = stamp
    return entries, stamps
