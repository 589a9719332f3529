"""The sandbox's stand-in for a site's internal Debian mirror: a signed flat apt repository.

Nodes have no route out, so the controller downloads (with this machine's apt) exactly the packages the
roles install that the node image lacks, indexes them, signs the index with a key of its own and serves the
directory over HTTP on the bridge. The roles then use it through `enclave_apt_sources` like any mirror.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enclave.errors import EnclaveError, SandboxError
from enclave.kit import apt
from enclave.kit.apt import SigningKey
from enclave.locks import file_lock
from enclave.sandbox import system
from enclave.sandbox.image import BaseImage

_REPO_FORMAT = 1


# The roles' package lists that sandbox hosts install: every host's (GPU-only lists such as nvidia's are
# left out: the sandbox has no GPU).
SANDBOX_PACKAGE_LISTS = apt.HOST_PACKAGE_LISTS


def role_packages(roles_dir: Path) -> list[str]:
    """Every package the sandbox hosts install, read from the roles' own defaults (no second list of
    package names to keep in step)."""
    return apt.role_packages(roles_dir, SANDBOX_PACKAGE_LISTS)


@dataclass(frozen=True)
class PackageRepo:
    cache: Path
    image: BaseImage
    packages: tuple[str, ...]

    @property
    def key(self) -> SigningKey:
        return SigningKey(self.cache / "repo-key")

    @property
    def path(self) -> Path:
        recipe = json.dumps([_REPO_FORMAT, self.image.key, sorted(self.packages)]).encode()
        return self.cache / "repos" / hashlib.sha256(recipe).hexdigest()[:12]

    def ready(self) -> bool:
        return (self.path / "InRelease").is_file()

    def ensure(self, report: Callable[[str], None]) -> Path:
        self.key.ensure()
        if self.ready():
            return self.path
        with file_lock(self.path.with_suffix(".lock")):
            if not self.ready():
                self._build(report)
        return self.path

    def _build(self, report: Callable[[str], None]) -> None:
        work = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        (work / "partial").mkdir(parents=True)
        report(f"downloading {len(self.packages)} packages and their dependencies for the nodes' mirror")
        try:
            self._download(work)
        except EnclaveError:
            # Usually stale package lists on this machine; refresh them once and try again.
            report("refreshing this machine's apt lists (apt-get update)")
            system.run(["apt-get", "update", "-q"], timeout=900)
            self._download(work)
        debs = sorted(p.name for p in work.glob("*.deb"))
        if not debs and self.packages:
            raise SandboxError("apt downloaded no packages for the nodes' mirror; is the image already complete?")
        apt.index(work, self.key, label="enclave-sandbox")
        shutil.rmtree(self.path, ignore_errors=True)
        work.rename(self.path)
        report(f"nodes' package mirror ready: {len(debs)} packages")

    def _download(self, dest: Path) -> None:
        apt.download(self.packages, dest, dpkg_status=self.image.dpkg_status())

