"""Walking a weights directory without following links, and hashing its files on every core."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .common import is_own_file
from .errors import InputError

CHUNK_BYTES = 8 * 1024 * 1024


@dataclass
class Tree:
    """What a weights directory holds: regular files by relative path (with their lstat) and anything else."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)



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
