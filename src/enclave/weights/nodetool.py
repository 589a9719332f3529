#!/usr/bin/env python3
"""The on-host weights tool: manifests, verification, signatures, activation, space and partial-download checks.

This one file is copied onto GPU and staging hosts that have python3 but not the enclave package, and runs there as
`python3 enclave-weights.py ...`; the controller imports the same module. It therefore uses the standard library only.

    enclave-weights manifest build DIR --repo ORG/NAME --revision REV --source TEXT [--expect-json FILE]
                                       [--license-file PATH] [--fetched-at UTC]
    enclave-weights manifest show DIR
    enclave-weights verify DIR [--deep] [--allowed-signers FILE --identity ID]
    enclave-weights sign DIR --key PRIVATE_KEY
    enclave-weights verify-signature DIR --allowed-signers FILE --identity ID
    enclave-weights activate MODELDIR REVISION --keep K [--allowed-signers FILE --identity ID]
    enclave-weights space-check PATH --need-bytes N [--margin 0.1]
    enclave-weights partials DIR
    enclave-weights status MODELDIR

Every verb takes `--json`. Exit codes: 0 ok, 1 a check failed, 2 bad usage or input. Errors are one line.

Errors (a copy of enclave.errors' shape, since that package is not on the hosts):

    NodeToolError          anything reported as one line instead of a traceback
    ├── InputError         bad arguments, a missing or malformed file                -> exit 2
    └── CheckFailed        the data was read but does not match what it should be    -> exit 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "MANIFEST.sha256"
SIGNATURE_NAME = MANIFEST_NAME + ".sig"
STAMPS_NAME = ".enclave-stamps.json"
ACTIVATIONS_NAME = ".enclave-activations.json"
CURRENT_LINK = "current"
TMP_PREFIX = ".enclave-tmp-"  # our own half-written files; never part of the model
HUB_CLIENT_DIR = ".cache"  # huggingface_hub's bookkeeping in a local_dir download (.cache/huggingface/...)
SIGN_NAMESPACE = "enclave-weights"
MANIFEST_VERSION = "1"
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt")
PARTIAL_SUFFIXES = (".incomplete", ".partial")
CHUNK_BYTES = 8 * 1024 * 1024
FIRST_LINE_MAX = 200
# A stamp is only trusted if the file was last written at least this long before the stamp was taken. Filesystems
# keep mtimes at coarse granularity (a kernel tick, 1 s on ext3 and some NFS servers, 2 s on FAT), so a file
# rewritten right after stamping could otherwise keep its old mtime, size and inode and skip the rehash.
RACY_WINDOW_NS = 3_000_000_000

HEADER_KEYS = (
    "repo",
    "revision",
    "source",
    "fetched-at",
    "files",
    "bytes",
    "license-sha256",
    "license-first-line",
)
SHA256_RE = re.compile(r"[0-9a-f]{64}")
HASH_LINE_RE = re.compile(r"([0-9a-f]{64})  (.+)")
SIZE_LINE_RE = re.compile(r"# size: (0|[1-9][0-9]*) (.+)")
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
REVISION_DIR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class NodeToolError(Exception):
    """Anything the CLI reports as one line. `details` is extra data for `--json` output."""

    exit_code = 2

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class InputError(NodeToolError):
    exit_code = 2


class CheckFailed(NodeToolError):
    exit_code = 1


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


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


# ---------------------------------------------------------------------------------------------------------------
# Walking and hashing


@dataclass
class Tree:
    """What a weights directory holds: regular files by relative path (with their lstat) and anything else."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)


def is_own_file(rel: str) -> bool:
    """Files this tool keeps next to the model: they are never hashed into, or checked against, the manifest."""
    return rel in (MANIFEST_NAME, SIGNATURE_NAME, STAMPS_NAME, HUB_CLIENT_DIR) or rel.startswith(TMP_PREFIX)


def walk_tree(root: Path) -> Tree:
    """List `root` recursively without following symlinks, so a link can never pull outside bytes into a model."""
    tree = Tree()
    pending = [("", root)]
    while pending:
        prefix, directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as e:
            raise InputError(f"cannot list {directory}: {e.strerror}") from e
        for entry in entries:
            rel = prefix + entry.name
            if not prefix and is_own_file(rel):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append((rel + "/", Path(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                tree.files[rel] = entry.stat(follow_symlinks=False)
            else:
                tree.others.append(rel)
    tree.files = dict(sorted(tree.files.items()))
    tree.others.sort()
    return tree


def hash_file(path: Path, chunk: int = CHUNK_BYTES) -> tuple[int, str]:
    """Return (bytes read, sha256 hex). One reused buffer: hashlib releases the GIL on large updates, so threads
    hashing different files run on separate cores."""
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    size = 0
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


def hash_many(root: Path, paths: Iterable[str], jobs: int) -> dict[str, tuple[int, str] | OSError]:
    """Hash files in parallel; an unreadable file gives its OSError instead of a result."""

    def one(rel: str) -> tuple[int, str] | OSError:
        try:
            return hash_file(root / rel)
        except OSError as e:
            return e

    rels = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return dict(zip(rels, pool.map(one, rels), strict=True))


def default_jobs() -> int:
    return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------------
# The manifest format


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    repo: str
    revision: str
    source: str
    fetched_at: str
    license_sha256: str
    license_first_line: str
    entries: tuple[FileEntry, ...]

    @property
    def files(self) -> int:
        return len(self.entries)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def summary(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "revision": self.revision,
            "source": self.source,
            "fetched_at": self.fetched_at,
            "files": self.files,
            "bytes": self.total_bytes,
            "license_sha256": self.license_sha256,
            "license_first_line": self.license_first_line,
        }


def render_manifest(m: Manifest) -> str:
    """The text of MANIFEST.sha256: '#' headers that GNU `sha256sum -c` skips, then its own `<sha256>  <path>` lines."""
    values = {
        "repo": m.repo,
        "revision": m.revision,
        "source": m.source,
        "fetched-at": m.fetched_at,
        "files": str(m.files),
        "bytes": str(m.total_bytes),
        "license-sha256": m.license_sha256,
        "license-first-line": m.license_first_line,
    }
    lines = [f"# enclave-manifest: {MANIFEST_VERSION}"]
    lines += [f"# {key}: {values[key]}" for key in HEADER_KEYS]
    lines += [f"# size: {e.size} {e.path}" for e in m.entries]
    lines += [f"{e.sha256}  {e.path}" for e in m.entries]
    return "\n".join(lines) + "\n"


class _Lines:
    """A cursor over manifest lines that knows line numbers, so every parse error can name one."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.index = 0

    @property
    def number(self) -> int:
        return self.index + 1

    def peek(self) -> str | None:
        return self.lines[self.index] if self.index < len(self.lines) else None

    def take(self) -> str | None:
        line = self.peek()
        self.index += 1
        return line

    def error(self, message: str, number: int | None = None) -> InputError:
        return InputError(f"malformed manifest: line {number or self.number}: {message}")


def parse_manifest(data: bytes) -> Manifest:
    """Parse strictly: the manifest is what every node trusts, so anything unexpected is refused, naming its line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"malformed manifest: line {line}: not valid UTF-8") from e
    if text and not text.endswith("\n"):
        line = text.count("\n") + 1
        raise InputError(f"malformed manifest: line {line}: no newline at end of file")
    cur = _Lines(text.split("\n")[:-1])
    header = _parse_header(cur)
    sizes = _parse_size_lines(cur)
    hashes = _parse_hash_lines(cur)
    entries = _join_entries(cur, sizes, hashes)
    _check_totals(header, entries)
    return Manifest(
        repo=header["repo"][1],
        revision=header["revision"][1],
        source=header["source"][1],
        fetched_at=header["fetched-at"][1],
        license_sha256=header["license-sha256"][1],
        license_first_line=header["license-first-line"][1],
        entries=tuple(entries),
    )


def _parse_header(cur: _Lines) -> dict[str, tuple[int, str]]:
    first = cur.take()
    if first is None or not first.startswith("# enclave-manifest: "):
        raise cur.error(f"not an enclave manifest (expected '# enclave-manifest: {MANIFEST_VERSION}')", 1)
    version = first.removeprefix("# enclave-manifest: ")
    if version != MANIFEST_VERSION:
        raise cur.error(f"manifest version {version!r} is not supported (this tool reads {MANIFEST_VERSION})", 1)
    header: dict[str, tuple[int, str]] = {}
    for key in HEADER_KEYS:
        number, line = cur.number, cur.take()
        prefix = f"# {key}: "
        if line is None or not line.startswith(prefix):
            raise cur.error(f"expected the '{prefix.strip()}' header", number)
        value = line.removeprefix(prefix)
        if not value.strip() or has_control_chars(value):
            raise cur.error(f"empty or unprintable value for {key!r}", number)
        header[key] = (number, value)
    for key in ("files", "bytes"):
        number, value = header[key]
        if not value.isdigit():
            raise cur.error(f"{key!r} must be a whole number, not {value!r}", number)
    if not SHA256_RE.fullmatch(header["license-sha256"][1]):
        raise cur.error("'license-sha256' must be 64 lowercase hex digits", header["license-sha256"][0])
    try:
        dt.datetime.strptime(header["fetched-at"][1], TIMESTAMP_FORMAT)
    except ValueError as e:
        raise cur.error("'fetched-at' must look like 2026-11-28T18:00:00Z", header["fetched-at"][0]) from e
    return header


def _parse_size_lines(cur: _Lines) -> list[tuple[int, int, str]]:
    sizes: list[tuple[int, int, str]] = []
    while (line := cur.peek()) is not None and line.startswith("#"):
        match = SIZE_LINE_RE.fullmatch(line)
        if not match:
            raise cur.error("expected '# size: <bytes> <path>'")
        sizes.append((cur.number, int(match.group(1)), _checked_path(cur, match.group(2))))
        cur.take()
    return sizes


def _parse_hash_lines(cur: _Lines) -> list[tuple[int, str, str]]:
    hashes: list[tuple[int, str, str]] = []
    while (line := cur.peek()) is not None:
        match = HASH_LINE_RE.fullmatch(line)
        if not match:
            raise cur.error("expected '<sha256>  <path>' (64 lowercase hex digits, two spaces, a path)")
        hashes.append((cur.number, match.group(1), _checked_path(cur, match.group(2))))
        cur.take()
    return hashes


def _checked_path(cur: _Lines, rel: str) -> str:
    problem = path_problem(rel)
    if problem is None and is_own_file(rel):
        problem = "the manifest cannot list its own bookkeeping files"
    if problem:
        raise cur.error(f"{problem}: {rel!r}")
    return rel


def _join_entries(
    cur: _Lines, sizes: list[tuple[int, int, str]], hashes: list[tuple[int, str, str]]
) -> list[FileEntry]:
    """Size lines and hash lines must name the same paths in the same order, each once."""
    seen: set[str] = set()
    for number, _, rel in hashes:
        if rel in seen:
            raise cur.error(f"duplicate path {rel!r}", number)
        seen.add(rel)
    for i in range(max(len(sizes), len(hashes))):
        if i >= len(sizes):
            raise cur.error(f"no '# size:' line for {hashes[i][2]!r}", hashes[i][0])
        if i >= len(hashes):
            raise cur.error(f"size line for {sizes[i][2]!r} has no hash line", sizes[i][0])
        if sizes[i][2] != hashes[i][2]:
            raise cur.error(f"hash line names {hashes[i][2]!r} but size line {sizes[i][0]} names {sizes[i][2]!r}",
                            hashes[i][0])
    return [FileEntry(rel, size, sha) for (_, size, rel), (_, sha, _) in zip(sizes, hashes, strict=True)]


def _check_totals(header: dict[str, tuple[int, str]], entries: list[FileEntry]) -> None:
    files_line, files = header["files"]
    bytes_line, total = header["bytes"]
    if int(files) != len(entries):
        raise InputError(f"malformed manifest: line {files_line}: says {files} files but lists {len(entries)}")
    actual = sum(e.size for e in entries)
    if int(total) != actual:
        raise InputError(f"malformed manifest: line {bytes_line}: says {total} bytes but sizes add up to {actual}")


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"no manifest at {path}; build one with 'manifest build'") from e
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from e
    try:
        return parse_manifest(data)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e


# ---------------------------------------------------------------------------------------------------------------
# Building a manifest


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


# ---------------------------------------------------------------------------------------------------------------
# Stamps: a cache of sha256 by (size, mtime_ns, ctime_ns, inode), so reruns need not rehash unchanged files. ctime
# is in the key because mtime is not evidence: anyone may write a file and put its old mtime back (os.utime), but
# the kernel moves ctime on every write, utime, chmod or rename, and nothing but a clock change can set it back.


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


# ---------------------------------------------------------------------------------------------------------------
# Verification


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


# ---------------------------------------------------------------------------------------------------------------
# Signatures (OpenSSH's `ssh-keygen -Y`: present on every host already, no new dependency)


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise InputError("ssh-keygen not found on PATH; install openssh-client")
    return exe


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "no message"


def sign_manifest(directory: Path, key: Path) -> Path:
    """Sign DIR/MANIFEST.sha256 into DIR/MANIFEST.sha256.sig.

    ssh-keygen signs a private copy: it asks on the terminal before overwriting an existing .sig (and silently keeps
    the old one when nobody answers), and the copy means the bytes signed are the bytes just parsed.
    """
    require_dir(directory)
    data = (directory / MANIFEST_NAME).read_bytes() if (directory / MANIFEST_NAME).is_file() else None
    if data is None:
        raise InputError(f"no manifest at {directory / MANIFEST_NAME}; build one with 'manifest build'")
    parse_manifest(data)
    if not key.is_file():
        raise InputError(f"signing key {key} does not exist")
    with tempfile.TemporaryDirectory(prefix="enclave-sign-") as tmp:
        copy = Path(tmp) / MANIFEST_NAME
        copy.write_bytes(data)
        proc = subprocess.run([_ssh_keygen(), "-Y", "sign", "-f", str(key), "-n", SIGN_NAMESPACE, str(copy)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        sig = copy.with_name(SIGNATURE_NAME)
        if proc.returncode != 0 or not sig.is_file():
            raise CheckFailed(f"ssh-keygen could not sign {directory / MANIFEST_NAME}: {_one_line(proc.stderr)}")
        write_atomic(directory / SIGNATURE_NAME, sig.read_bytes())
    return directory / SIGNATURE_NAME


@dataclass(frozen=True)
class Signers:
    """Who may sign manifests: an OpenSSH allowed_signers file and the identity expected in it."""

    allowed: Path
    identity: str


def load_manifest(directory: Path, signers: Signers | None = None) -> Manifest:
    """The manifest to trust: when `signers` is given, parsed from exactly the bytes whose signature was checked."""
    if signers is None:
        return read_manifest(directory)
    data = verify_signature(directory, signers.allowed, signers.identity)
    try:
        return parse_manifest(data)
    except InputError as e:
        raise InputError(f"{directory / MANIFEST_NAME}: {e}") from e


def verify_signature(directory: Path, allowed_signers: Path, identity: str) -> bytes:
    """Check the manifest's signature and return the exact bytes that were verified, so a caller can parse those
    bytes rather than reread a file that might have been swapped in between."""
    manifest_path, sig_path = directory / MANIFEST_NAME, directory / SIGNATURE_NAME
    if not manifest_path.is_file():
        raise InputError(f"no manifest at {manifest_path}")
    if not sig_path.is_file():
        raise CheckFailed(f"no signature at {sig_path}; sign the manifest on the staging host with 'sign'")
    if not allowed_signers.is_file():
        raise InputError(f"allowed signers file {allowed_signers} does not exist")
    data = manifest_path.read_bytes()
    proc = subprocess.run(
        [_ssh_keygen(), "-Y", "verify", "-f", str(allowed_signers), "-I", identity, "-n", SIGN_NAMESPACE,
         "-s", str(sig_path)],
        input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        why = _one_line(proc.stderr.decode("utf-8", "replace") + proc.stdout.decode("utf-8", "replace"))
        raise CheckFailed(f"signature check failed for {manifest_path} (identity {identity!r}): {why}")
    return data


# ---------------------------------------------------------------------------------------------------------------
# Activation: switch `current` atomically and prune old revisions


@dataclass
class ActivateResult:
    revision: str
    previous: str | None
    changed: bool
    kept: list[str]
    removed: list[str]
    verify: VerifyReport

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "previous": self.previous, "changed": self.changed, "kept": self.kept,
                "removed": self.removed, "verify": self.verify.to_json()}


def check_revision_name(revision: str) -> None:
    if not REVISION_DIR_RE.fullmatch(revision) or revision == CURRENT_LINK:
        raise InputError(f"revision must be a plain directory name (letters, digits, '._-'), not {revision!r}")


def read_current(model_dir: Path) -> str | None:
    link = model_dir / CURRENT_LINK
    if link.is_symlink():
        return str(link.readlink())
    if link.exists():
        raise InputError(f"{link} exists but is not a symlink; move it away so it can point at a revision")
    return None


def load_activations(model_dir: Path) -> list[str]:
    """Revisions in activation order, oldest first. Unlike stamps this is state (it decides what may be deleted),
    so a damaged file stops activation instead of being guessed at."""
    path = model_dir / ACTIVATIONS_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}; fix or remove it (nothing is pruned until revisions are "
                         "activated again)") from e
    order = data.get("activations") if isinstance(data, dict) else None
    if not isinstance(order, list) or not all(isinstance(r, str) and REVISION_DIR_RE.fullmatch(r) for r in order):
        raise InputError(f"{path} is malformed; fix or remove it (nothing is pruned until revisions are "
                         "activated again)")
    return order


def save_activations(model_dir: Path, order: list[str]) -> None:
    data = {"activations": order}
    write_atomic(model_dir / ACTIVATIONS_NAME, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def switch_current(model_dir: Path, revision: str) -> None:
    """Point `current` at `revision` with one rename, so a reader always finds the old or the new link."""
    tmp = model_dir / f"{TMP_PREFIX}{CURRENT_LINK}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.symlink_to(revision)
    try:
        tmp.replace(model_dir / CURRENT_LINK)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(model_dir)


def activate_revision(model_dir: Path, revision: str, *, keep: int, jobs: int | None = None,
                      signers: Signers | None = None) -> ActivateResult:
    """Verify MODELDIR/REVISION (and its manifest's signature, given `signers`), make it current, then keep only the
    `keep` most recently activated revisions (the current one counts and is never removed; revisions this tool
    never activated are never touched)."""
    require_dir(model_dir, "model directory")
    check_revision_name(revision)
    if keep < 1:
        raise InputError("--keep must be at least 1 (the current revision is always kept)")
    target = model_dir / revision
    if target.is_symlink() or not target.is_dir():
        raise InputError(f"{target} does not exist or is not a directory; distribute the revision first")
    previous = read_current(model_dir)
    order = load_activations(model_dir)  # read before anything changes, so a damaged file stops us cleanly
    manifest = load_manifest(target, signers)
    _check_manifest_names(model_dir, revision, manifest)
    report = verify_tree(target, jobs=jobs, manifest=manifest)
    if not report.ok:
        first = report.problems[0].describe()
        raise CheckFailed(f"refusing to activate {target}: {len(report.problems)} problem(s), first: {first}",
                          {"verify": report.to_json()})

    if previous != revision:
        switch_current(model_dir, revision)
    new_order = [r for r in order if r != revision] + [revision]
    try:
        kept, removed = _prune(model_dir, new_order, revision, keep)
    finally:
        # Record the activation even if pruning failed part way, and forget revisions that are gone.
        remaining = [r for r in new_order if r == revision or (model_dir / r).is_dir()]
        if remaining != order:
            save_activations(model_dir, remaining)
    return ActivateResult(revision, previous, previous != revision or bool(removed), kept, removed, report)


def _check_manifest_names(model_dir: Path, revision: str, manifest: Manifest) -> None:
    """Catch a revision copied into the wrong place before it is served under the wrong name."""
    if manifest.revision != revision:
        raise CheckFailed(f"{model_dir / revision} holds a manifest for revision {manifest.revision!r}")
    expected_dir = manifest.repo.replace("/", "--")
    if model_dir.name != expected_dir:
        raise CheckFailed(f"{model_dir / revision} holds {manifest.repo}, which belongs in .../{expected_dir}/")


def _prune(model_dir: Path, order: list[str], current: str, keep: int) -> tuple[list[str], list[str]]:
    keep_set = set(order[-keep:]) | {current}
    removed: list[str] = []
    failures: list[str] = []
    for revision in order:
        path = model_dir / revision
        if revision in keep_set or path.is_symlink() or not path.is_dir():
            continue
        try:
            shutil.rmtree(path)
            removed.append(revision)
        except OSError as e:
            failures.append(f"{path}: {e.strerror}")
    kept = [r for r in order if r in keep_set]
    if failures:
        raise CheckFailed(f"activated {current}, but could not remove old revision {failures[0]}",
                          {"removed": removed, "kept": kept})
    return kept, removed


# ---------------------------------------------------------------------------------------------------------------
# Space and partial downloads


@dataclass
class SpaceReport:
    path: str
    checked_at: str
    free_bytes: int
    need_bytes: int
    margin: float
    required_bytes: int

    @property
    def ok(self) -> bool:
        return self.free_bytes >= self.required_bytes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def space_check(path: Path, need_bytes: int, margin: float = 0.1) -> SpaceReport:
    """Compare free space where PATH will live with the need plus a margin, before any byte is moved."""
    if need_bytes < 0 or margin < 0:
        raise InputError("--need-bytes and --margin must not be negative")
    where = nearest_existing(path)
    free = shutil.disk_usage(where).free
    required = int(need_bytes * (1 + margin))
    return SpaceReport(str(path), str(where), free, need_bytes, margin, required)


def find_partials(directory: Path) -> list[tuple[str, int]]:
    """Partial downloads (`.incomplete` from huggingface_hub, `.partial` from our own transfers), with sizes."""
    require_dir(directory)
    found: list[tuple[str, int]] = []
    for base, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(PARTIAL_SUFFIXES):
                full = Path(base) / name
                with_stat = full.lstat()
                if stat.S_ISREG(with_stat.st_mode):
                    found.append((full.relative_to(directory).as_posix(), with_stat.st_size))
    return sorted(found)


# ---------------------------------------------------------------------------------------------------------------
# The CLI: each verb calls one core function and turns its result into text or JSON


@dataclass
class Outcome:
    code: int
    data: dict[str, Any]
    lines: list[str]


LAST_TRANSFER_NAME = ".enclave-last-transfer.json"  # written by the weights role after bytes moved


def model_status(model_dir: Path) -> dict[str, Any]:
    """What a model directory holds: `current`, the activation order, each revision's manifest summary, and what the
    last transfer moved. Reads only; a damaged manifest is reported on its revision, not raised."""
    if not model_dir.is_dir():
        return {"model_dir": str(model_dir), "exists": False, "current": None, "activations": [], "revisions": [],
                "last_transfer": None}
    current = read_current(model_dir)
    order = load_activations(model_dir)
    revisions = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        info: dict[str, Any] = {"revision": entry.name, "current": entry.name == current,
                                "activated": entry.name in order, "signed": (entry / SIGNATURE_NAME).is_file()}
        try:
            info.update(read_manifest(entry).summary())
        except NodeToolError as e:
            info["manifest_error"] = str(e)
        revisions.append(info)
    last = model_dir / LAST_TRANSFER_NAME
    try:
        last_transfer = json.loads(last.read_text(encoding="utf-8")) if last.is_file() else None
    except (OSError, ValueError) as e:
        last_transfer = {"error": f"cannot read {last}: {e}"}
    return {"model_dir": str(model_dir), "exists": True, "current": current, "activations": order,
            "revisions": revisions, "last_transfer": last_transfer}


def cmd_status(args: argparse.Namespace) -> Outcome:
    data = model_status(Path(args.model_dir))
    lines = [f"current: {data['current'] or 'none'}"]
    lines += [f"{'*' if r['current'] else ' '} {r['revision']}  {r.get('files', '?')} files  "
              f"{human(r['bytes']) if 'bytes' in r else r.get('manifest_error', '')}" for r in data["revisions"]]
    return Outcome(0, data, lines)


def cmd_manifest_build(args: argparse.Namespace) -> Outcome:
    result = build_manifest(Path(args.dir), repo=args.repo, revision=args.revision, source=args.source,
                            expect_json=Path(args.expect_json) if args.expect_json else None,
                            license_file=Path(args.license_file) if args.license_file else None,
                            fetched_at=args.fetched_at, jobs=args.jobs)
    m = result.manifest
    lines = [f"wrote {Path(args.dir) / MANIFEST_NAME}: {m.files} files, {human(m.total_bytes)}, "
             f"license {result.license_file} ({m.license_first_line})"]
    if result.removed_stale_signature:
        lines.append(f"removed the old {SIGNATURE_NAME}; sign the new manifest")
    return Outcome(0, result.to_json(), lines)


def cmd_manifest_show(args: argparse.Namespace) -> Outcome:
    m = read_manifest(Path(args.dir))
    s = m.summary()
    lines = [f"{key + ':':<20}{s[key]}" for key in ("repo", "revision", "source", "fetched_at", "files")]
    lines.append(f"{'bytes:':<20}{m.total_bytes} ({human(m.total_bytes)})")
    lines.append(f"{'license sha256:':<20}{m.license_sha256}")
    lines.append(f"{'license:':<20}{m.license_first_line}")
    return Outcome(0, s, lines)


def signers_from(args: argparse.Namespace) -> Signers | None:
    if (args.allowed_signers is None) != (args.identity is None):
        raise InputError("--allowed-signers and --identity go together")
    return Signers(Path(args.allowed_signers), args.identity) if args.allowed_signers else None


def cmd_verify(args: argparse.Namespace) -> Outcome:
    manifest = load_manifest(Path(args.dir), signers_from(args))
    report = verify_tree(Path(args.dir), deep=args.deep, jobs=args.jobs, manifest=manifest)
    return Outcome(0 if report.ok else 1, report.to_json(), describe_verify(Path(args.dir), report))


def describe_verify(directory: Path, r: VerifyReport) -> list[str]:
    rate = f", {human(r.bytes_hashed / r.seconds)}/s" if r.seconds > 0 and r.bytes_hashed else ""
    stats = (f"hashed {r.files_hashed} files ({human(r.bytes_hashed)} in {r.seconds:.1f} s{rate}), "
             f"{r.files_from_stamps} unchanged since their stamp")
    lines = [p.describe() for p in r.problems]
    head = "OK" if r.ok else f"FAILED ({len(r.problems)} problems)"
    lines.append(f"{head}: {directory}: {r.files} files, {human(r.total_bytes)}; {stats}")
    if not r.stamps_saved:
        lines.append(f"note: stamps not saved ({r.stamp_error}); the next run hashes again")
    return lines


def cmd_sign(args: argparse.Namespace) -> Outcome:
    sig = sign_manifest(Path(args.dir), Path(args.key))
    return Outcome(0, {"signature": str(sig)}, [f"wrote {sig}"])


def cmd_verify_signature(args: argparse.Namespace) -> Outcome:
    directory = Path(args.dir)
    verify_signature(directory, Path(args.allowed_signers), args.identity)
    return Outcome(0, {"ok": True, "identity": args.identity},
                   [f"good signature on {directory / MANIFEST_NAME} by {args.identity}"])


def cmd_activate(args: argparse.Namespace) -> Outcome:
    r = activate_revision(Path(args.model_dir), args.revision, keep=args.keep, jobs=args.jobs,
                          signers=signers_from(args))
    verb = "activated" if r.previous != r.revision else "already current:"
    lines = [f"{verb} {r.revision} (previous: {r.previous or 'none'}); kept {', '.join(r.kept)}"]
    if r.removed:
        lines.append(f"removed {', '.join(r.removed)}")
    return Outcome(0, r.to_json(), lines)


def cmd_space_check(args: argparse.Namespace) -> Outcome:
    r = space_check(Path(args.path), args.need_bytes, args.margin)
    if r.ok:
        return Outcome(0, r.to_json(), [f"OK: {gb(r.free_bytes)} free at {r.checked_at}, "
                                        f"{gb(r.required_bytes)} needed"])
    message = (f"not enough space at {r.checked_at} for {r.path}: {gb(r.free_bytes)} free, "
               f"{gb(r.required_bytes)} needed ({gb(r.need_bytes)} + {r.margin:.0%} margin)")
    return Outcome(1, {**r.to_json(), "error": message}, [message])


def cmd_partials(args: argparse.Namespace) -> Outcome:
    found = find_partials(Path(args.dir))
    data = {"partials": [{"path": p, "size": s} for p, s in found], "bytes": sum(s for _, s in found)}
    return Outcome(0, data, [f"{s} {p}" for p, s in found])


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_signer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allowed-signers", help="check the manifest's signature first (OpenSSH allowed_signers file)")
    p.add_argument("--identity", help="the signer identity expected in --allowed-signers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enclave-weights", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(subs: Any, name: str, func: Callable[[argparse.Namespace], Outcome], text: str) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=text, description=text)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(func=func)
        return p

    manifest = verbs.add_parser("manifest", help="build or show MANIFEST.sha256")
    msubs = manifest.add_subparsers(dest="manifest_verb", required=True)
    p = verb(msubs, "build", cmd_manifest_build, "hash every file under DIR and write DIR/MANIFEST.sha256")
    p.add_argument("dir")
    p.add_argument("--repo", required=True, help="ORG/NAME")
    p.add_argument("--revision", required=True, help="the pinned revision (a 40-hex commit for the hub)")
    p.add_argument("--source", required=True, help="where the files came from, e.g. a hub URL or 'local:/mnt/disk'")
    p.add_argument("--expect-json", help="JSON {path: {sha256, size}} every listed file must match")
    p.add_argument("--license-file", help="copy this license text to DIR/LICENSE first")
    p.add_argument("--fetched-at", help="UTC fetch time, e.g. 2026-11-28T18:00:00Z (default: now)")
    p.add_argument("--jobs", type=positive_int, help="files hashed at once (default: CPU count)")
    p = verb(msubs, "show", cmd_manifest_show, "print what DIR/MANIFEST.sha256 records")
    p.add_argument("dir")

    p = verb(verbs, "verify", cmd_verify, "check DIR against its manifest")
    p.add_argument("dir")
    p.add_argument("--deep", action="store_true", help="rehash every file, ignoring stamps")
    p.add_argument("--jobs", type=positive_int, help="files hashed at once (default: CPU count)")
    add_signer_options(p)

    p = verb(verbs, "sign", cmd_sign, "sign DIR/MANIFEST.sha256 with an OpenSSH key")
    p.add_argument("dir")
    p.add_argument("--key", required=True, help="private key file (or a public key whose private half is in ssh-agent)")

    p = verb(verbs, "verify-signature", cmd_verify_signature, "check DIR/MANIFEST.sha256.sig")
    p.add_argument("dir")
    p.add_argument("--allowed-signers", required=True, help="OpenSSH allowed_signers file")
    p.add_argument("--identity", required=True, help="the signer identity expected in that file")

    p = verb(verbs, "activate", cmd_activate, "verify MODELDIR/REVISION, point MODELDIR/current at it, prune old ones")
    p.add_argument("model_dir", metavar="MODELDIR")
    p.add_argument("revision", metavar="REVISION")
    p.add_argument("--keep", type=int, required=True,
                   help="revisions to keep on disk, counting the new current one (at least 1)")
    p.add_argument("--jobs", type=positive_int, help="files hashed at once (default: CPU count)")
    add_signer_options(p)

    p = verb(verbs, "space-check", cmd_space_check, "check free space where PATH will be written")
    p.add_argument("path")
    p.add_argument("--need-bytes", type=int, required=True)
    p.add_argument("--margin", type=float, default=0.1, help="extra fraction required (default: 0.1)")

    p = verb(verbs, "status", cmd_status, "show MODELDIR's current revision, kept revisions and the last transfer")
    p.add_argument("model_dir", metavar="MODELDIR")

    p = verb(verbs, "partials", cmd_partials, "list partial downloads under DIR")
    p.add_argument("dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage and 0 for --help; main() returns instead
        return e.code if isinstance(e.code, int) else 2
    try:
        outcome = args.func(args)
    except NodeToolError as e:
        outcome = Outcome(e.exit_code, {**e.details, "error": str(e)}, [])
        print(f"enclave-weights: error: {e}", file=sys.stderr)
    except OSError as e:
        outcome = Outcome(2, {"error": str(e)}, [])
        print(f"enclave-weights: error: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": outcome.code == 0, **outcome.data}, indent=1))
    else:
        stream = sys.stdout if outcome.code == 0 else sys.stderr
        for line in outcome.lines:
            print(line, file=stream)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
