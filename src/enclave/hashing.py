"""A file's sha256, the one way the controller reads it: kit manifests, weights bundles and engine wheelhouses all
name their files by it. (The stdlib tools copied to hosts keep their own: they import nothing of the kit.)"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (model files run to tens of GB)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
