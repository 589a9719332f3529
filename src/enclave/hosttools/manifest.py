"""The MANIFEST.sha256 format: render, parse strictly, read; and the one reader of sha256sum lines (with the
manifest's `# size:` lines) that the transfer tool uses for a source's checksums too."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import MANIFEST_NAME, SHA256_RE, TIMESTAMP_FORMAT, has_control_chars, is_own_file, path_problem
from .errors import InputError

MANIFEST_VERSION = "1"

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
HASH_LINE_RE = re.compile(r"([0-9a-f]{64})  (.+)")
SIZE_LINE_RE = re.compile(r"# size: (0|[1-9][0-9]*) (.+)")
# What GNU sha256sum writes: two spaces in text mode, a space and `*` in binary mode. A manifest holds only the
# first (HASH_LINE_RE); a source's SHA256SUMS may hold either.
SUMS_LINE_RE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


def sums_line(line: str) -> tuple[str, int | str, str] | None:
    """One line of a checksums file: ("size", bytes, path) for a `# size: N PATH` line, ("sha256", hex, path) for a
    sha256sum line, None for anything else (a comment, a blank line, a malformed line: the caller decides)."""
    if match := SIZE_LINE_RE.fullmatch(line):
        return "size", int(match.group(1)), match.group(2)
    if match := SUMS_LINE_RE.fullmatch(line):
        return "sha256", match.group(1), match.group(2)
    return None


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
        parsed = sums_line(line)
        if parsed is None or parsed[0] != "size":
            raise cur.error("expected '# size: <bytes> <path>'")
        _, size, rel = parsed
        sizes.append((cur.number, int(size), _checked_path(cur, rel)))
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
