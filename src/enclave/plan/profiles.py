"""Model profiles: data files shipped in the package (src/enclave/profiles/*.yml); a fact is one edit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from enclave.errors import UsageError

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"


@dataclass(frozen=True)
class ModelProfile:
    name: str
    repo: str
    size_gb: float
    min_gpu_memory_gb: float

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb * 1e9)


def available(directory: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yml"))


def load_profile(name: str, directory: Path = PROFILES_DIR) -> ModelProfile:
    path = directory / f"{name}.yml"
    if not path.is_file():
        raise UsageError(f"unknown model profile {name!r}; known: {', '.join(available(directory))}")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return ModelProfile(name=str(data["name"]), repo=str(data["repo"]), size_gb=float(data["size_gb"]),
                            min_gpu_memory_gb=float(data["min_gpu_memory_gb"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: incomplete model profile ({exc})") from None
