"""Free space before bytes move (`space-check`), and the partial downloads a directory holds (`partials`)."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common import PARTIAL_SUFFIXES, require_dir
from .errors import InputError


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
