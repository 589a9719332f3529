"""Stored repositories: commits as plain directories, refs as one-line files, hashes cached per commit.

Layout under the mirror root::

    ROOT/<org>/<name>/<commit>/<files...>   one directory per commit (40 hex), never changed once there
    ROOT/<org>/<name>/refs/<refname>        one line holding a commit id (refs/main, refs/v1.0, ...)
    ROOT/<org>/<name>/index/<commit>.json   size, sha256, git blob id and LFS flag of every file

Plain directories keep the store readable with `ls` and copyable with `rsync`; the index exists because weights are
hundreds of GB and must be hashed once, not on every start. A commit id is a sha1 over the sorted (path, sha256)
pairs, so publishing the same files twice gives the same commit and the second publish copies nothing new.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from enclave.errors import EnclaveError, UsageError

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024
INDEX_FORMAT = 1
CHUNK = 1024 * 1024
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# The hub's own rule is close to this; being stricter costs nothing and keeps names safe as directory names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
# Paths a download tool leaves inside a folder it filled; they describe that download, not the model.
SKIPPED_DIRS = (".git", ".cache/huggingface")


class MirrorError(EnclaveError):
    """The store cannot be read or written (a file changed while copied, an unreadable entry, ...)."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit. `blob_id` is what git would record: the pointer's blob for LFS files, as on the hub."""

    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "blob_id": self.blob_id, "lfs": self.lfs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        return cls(str(data["path"]), int(data["size"]), str(data["sha256"]), str(data["blob_id"]), bool(data["lfs"]))


@dataclass(frozen=True)
class Folder:
    """A directory of a commit; `tree_id` is its git tree id, computed from the entries below it."""

    path: str
    tree_id: str


@dataclass(frozen=True)
class Commit:
    """An immutable set of files. `created` is ISO 8601 UTC with milliseconds, the form the hub's API uses."""

    sha: str
    created: str
    files: tuple[FileEntry, ...]

    @cached_property
    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    @cached_property
    def tree_ids(self) -> dict[str, str]:
        return tree_ids(self.files)

    def file(self, path: str) -> FileEntry | None:
        return self.by_path.get(path)

    def folder(self, path: str) -> Folder | None:
        tree_id = self.tree_ids.get(path)
        return Folder(path, tree_id) if tree_id is not None else None

    def listing(self, directory: str = "", *, recursive: bool = False) -> list[FileEntry | Folder]:
        """Entries under `directory` ("" is the root): folders first, then files, each sorted, like the hub."""
        prefix = f"{directory}/" if directory else ""
        folders = [Folder(p, t) for p, t in self.tree_ids.items() if p.startswith(prefix) and p != directory]
        files = [f for f in self.files if f.path.startswith(prefix)]
        if not recursive:
            folders = [d for d in folders if "/" not in d.path[len(prefix):]]
            files = [f for f in files if "/" not in f.path[len(prefix):]]
        return [*sorted(folders, key=lambda d: d.path), *sorted(files, key=lambda f: f.path)]


def is_lfs(path: str, size: int) -> bool:
    """The hub stores weights and anything large in LFS; small text (tokenizer.json, LICENSE) stays plain git."""
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The text git keeps in place of an LFS file (git-lfs spec v1); the hub reports its size as pointerSize."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def commit_id(files: Iterable[FileEntry]) -> str:
    """Deterministic: the same paths with the same contents always give the same commit."""
    digest = hashlib.sha1(usedforsecurity=False)
    for path, sha256 in sorted((f.path, f.sha256) for f in files):
        digest.update(f"{path}\0{sha256}\n".encode())
    return digest.hexdigest()


def tree_ids(files: Iterable[FileEntry]) -> dict[str, str]:
    """Git tree ids of every directory ("" is the root), so folder entries carry a stable `oid` like the hub's."""
    children: dict[str, list[tuple[str, bytes, str]]] = defaultdict(list)
    folders = {""}
    for entry in files:
        parent, _, name = entry.path.rpartition("/")
        children[parent].append((name, b"100644", entry.blob_id))
        while parent not in folders:
            folders.add(parent)
            parent = parent.rpartition("/")[0]
    ids: dict[str, str] = {}
    for folder in sorted(folders, key=lambda d: d.count("/") + bool(d), reverse=True):  # deepest first, root last
        ids[folder] = _git_tree_id(children[folder])
        if folder:
            parent, _, name = folder.rpartition("/")
            children[parent].append((name, b"40000", ids[folder]))
    return ids


def _git_tree_id(entries: list[tuple[str, bytes, str]]) -> str:
    # git orders a tree's entries by name, comparing a directory's name as if it ended in "/".
    ordered = sorted(entries, key=lambda e: e[0].encode() + (b"/" if e[1] == b"40000" else b""))
    body = b"".join(mode + b" " + name.encode() + b"\0" + bytes.fromhex(oid) for name, mode, oid in ordered)
    return hashlib.sha1(b"tree %d\0" % len(body) + body, usedforsecurity=False).hexdigest()


def parse_repo_id(repo_id: str) -> tuple[str, str]:
    org, sep, name = repo_id.partition("/")
    if not sep or not _good_name(org) or not _good_name(name):
        raise UsageError(f"repo id {repo_id!r}: expected <org>/<name> of letters, digits, '.', '_' or '-'")
    return org, name


def check_ref(ref: str) -> str:
    if not _good_name(ref):
        raise UsageError(f"ref {ref!r}: expected letters, digits, '.', '_' or '-' (e.g. main)")
    return ref


def _good_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None and ".." not in name


class StoredRepo:
    """One repository directory. Refs are read on every call so a publish shows up without a restart."""

    def __init__(self, path: Path, repo_id: str) -> None:
        self.path = path
        self.repo_id = repo_id

    def resolve(self, revision: str) -> str | None:
        """A commit id for a ref name or a commit id; None when neither exists here."""
        if COMMIT_RE.fullmatch(revision):
            return revision if (self.path / revision).is_dir() else None
        if not _good_name(revision):
            return None
        try:
            sha = (self.path / "refs" / revision).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return sha if COMMIT_RE.fullmatch(sha) and (self.path / sha).is_dir() else None

    def file_path(self, commit: Commit, entry: FileEntry) -> Path:
        return self.path / commit.sha / entry.path

    def load_commit(self, sha: str) -> Commit:
        """Read the commit's index, or hash its directory once and write the index (a commit copied in by hand)."""
        index = self.path / "index" / f"{sha}.json"
        commit = _read_index(index, sha)
        if commit is None:
            commit_dir = self.path / sha
            created = _iso(datetime.fromtimestamp(commit_dir.stat().st_mtime, UTC))
            files = tuple(_hash_file(rel, path) for rel, path in iter_source_files(commit_dir))
            commit = Commit(sha, created, files)
            with contextlib.suppress(OSError):  # a read-only store still serves; it hashes again after a restart
                _write_index(index, commit)
        return commit


class RepoStore:
    """The mirror root. Commits are immutable, so each is loaded once and kept in memory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._commits: dict[tuple[str, str], Commit] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def repo(self, repo_id: str) -> StoredRepo | None:
        org, name = parse_repo_id(repo_id)
        path = self.root / org / name
        return StoredRepo(path, repo_id) if path.is_dir() else None

    def commit(self, repo: StoredRepo, sha: str) -> Commit:
        """One lock per commit: a first request that hashes a large commit does not hold up the other repos."""
        key = (repo.repo_id, sha)
        with self._guard:
            lock = self._locks[key]
        with lock:
            if key not in self._commits:
                self._commits[key] = repo.load_commit(sha)
            return self._commits[key]


def publish(root: Path, repo_id: str, source: Path, *, ref: str = "main") -> str:
    """Copy `source` into the store as a commit, point `ref` at it and return the commit id.

    Files are hashed while they are copied, so the recorded hashes describe exactly the bytes stored. The copy goes
    to a staging directory renamed into place at the end: a reader never sees half a commit.
    """
    org, name = parse_repo_id(repo_id)
    check_ref(ref)
    if not source.is_dir():
        raise UsageError(f"{source}: not a directory; publish takes the folder holding the model files")
    repo_dir = root / org / name
    repo_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=repo_dir))
    try:
        staging.chmod(0o755)  # becomes the commit directory, read by a server that may run as another user
        files = tuple(_copy_file(rel, path, staging / rel) for rel, path in iter_source_files(source))
        if not files:
            raise UsageError(f"{source}: no files to publish")
        sha = commit_id(files)
        index = repo_dir / "index" / f"{sha}.json"
        if _read_index(index, sha) is None:
            _write_index(index, Commit(sha, _iso(datetime.now(UTC)), files))
        _move_into_place(staging, repo_dir / sha)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_atomic(repo_dir / "refs" / ref, f"{sha}\n".encode())
    return sha


def iter_source_files(source: Path) -> Iterator[tuple[str, Path]]:
    """(posix relative path, path) of every file under `source`, sorted; symlinks to files are followed."""
    for dirpath, dirnames, filenames in os.walk(source, onerror=_walk_error):
        here = Path(dirpath)
        rel_dir = here.relative_to(source).as_posix()
        dirnames[:] = sorted(d for d in dirnames if _wanted_dir(rel_dir, d, here / d))
        for filename in sorted(filenames):
            path = here / filename
            rel = path.relative_to(source).as_posix()
            if not path.is_file():
                raise MirrorError(f"{path}: not a regular file (a broken link, socket or device?)")
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MirrorError(f"{path}: file name is not UTF-8; the hub protocol cannot carry it") from exc
            yield rel, path


def _walk_error(error: OSError) -> None:
    raise MirrorError(f"{error.filename}: cannot list: {error.strerror}") from error


def _wanted_dir(rel_dir: str, name: str, path: Path) -> bool:
    rel = name if rel_dir == "." else f"{rel_dir}/{name}"
    if rel in SKIPPED_DIRS:
        return False
    if path.is_symlink():
        raise MirrorError(f"{path}: a symlinked directory; copy or move the real directory there instead")
    return True


def _hash_file(rel: str, path: Path) -> FileEntry:
    with path.open("rb") as src:
        return _hash_stream(rel, src, os.fstat(src.fileno()).st_size, None)


def _copy_file(rel: str, path: Path, target: Path) -> FileEntry:
    target.parent.mkdir(parents=True, exist_ok=True)
    with path.open("rb") as src, target.open("wb") as sink:
        entry = _hash_stream(rel, src, os.fstat(src.fileno()).st_size, sink)
        sink.flush()
        os.fsync(sink.fileno())
    target.chmod(0o644)
    return entry


def _hash_stream(rel: str, src: BinaryIO, size: int, sink: BinaryIO | None) -> FileEntry:
    """Read once, hash (and copy) in chunks: weight files are larger than memory."""
    lfs = is_lfs(rel, size)
    sha256 = hashlib.sha256()
    # The content's git blob id only matters for plain files; for LFS files git records the pointer instead.
    blob = None if lfs else hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    seen = 0
    while chunk := src.read(CHUNK):
        seen += len(chunk)
        sha256.update(chunk)
        if blob is not None:
            blob.update(chunk)
        if sink is not None:
            sink.write(chunk)
    if seen != size:
        raise MirrorError(f"{rel}: size changed from {size} to {seen} bytes while it was read; is it still written?")
    oid = sha256.hexdigest()
    blob_id = git_blob_id(lfs_pointer(oid, size)) if blob is None else blob.hexdigest()
    return FileEntry(rel, size, oid, blob_id, lfs)


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # an existing commit dir holds the same files (same id): nothing to do
            raise


def _read_index(index: Path, sha: str) -> Commit | None:
    try:
        data = json.loads(index.read_text())
        if data.get("format") != INDEX_FORMAT or data.get("commit") != sha:
            return None
        return Commit(sha, str(data["created"]), tuple(FileEntry.from_json(f) for f in data["files"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or from another version: hash again rather than serve doubtful metadata


def _write_index(index: Path, commit: Commit) -> None:
    data = {
        "format": INDEX_FORMAT,
        "commit": commit.sha,
        "created": commit.created,
        "files": [f.to_json() for f in sorted(commit.files, key=lambda f: f.path)],
    }
    _write_atomic(index, json.dumps(data, indent=1).encode())


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
