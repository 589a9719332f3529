"""enclave.hashing: the one file digest the kit, bundles and wheelhouses name files by."""

from __future__ import annotations

import hashlib
from pathlib import Path

from enclave.hashing import sha256_file


def test_sha256_file_is_the_digest_of_the_whole_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # over one read block of file_digest, so the blocks must be joined
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_of_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
