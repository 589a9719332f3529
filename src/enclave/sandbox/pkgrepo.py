"""The sandbox's stand-in for a site's internal Debian mirror: a signed flat apt repository.

Nodes have no route out, so the controller downloads (with this machine's apt) exactly the packages the
roles install that the node image lacks, indexes them, signs the index with a key of its own and serves the
directory over HTTP on the bridge. The roles then use it through `enclave_apt_sources` like any mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from enclave.errors import SandboxError
from enclave.locks import file_lock
from enclave.sandbox import system
from enclave.sandbox.image import BaseImage

_REPO_FORMAT = 1


# The roles' package lists that sandbox hosts install (GPU-only lists such as nvidia's are left out: the
# sandbox has no GPU). A role that installs packages on every host adds its list's name here.
SANDBOX_PACKAGE_LISTS = ("base_packages", "weights_staging_packages", "engine_packages", "firewall_packages",
                         "gateway_packages")


def role_packages(roles_dir: Path) -> list[str]:
    """Every package the sandbox hosts install, read from the roles' own defaults (no second list of
    package names to keep in step)."""
    packages: set[str] = set()
    for defaults in sorted(roles_dir.glob("*/defaults/main.yml")):
        data = yaml.safe_load(defaults.read_text()) or {}
        for key in SANDBOX_PACKAGE_LISTS:
            packages.update(str(p) for p in data.get(key) or [] if isinstance(p, str) and "{{" not in p)
    return sorted(packages)


@dataclass(frozen=True)
class SigningKey:
    home: Path

    @property
    def public_key_file(self) -> Path:
        return self.home / "public.asc"

    def ensure(self) -> str:
        with file_lock(self.home.with_suffix(".lock")):
            if not self.public_key_file.is_file():
                gnupg = self.home / "gnupg"
                shutil.rmtree(gnupg, ignore_errors=True)
                gnupg.mkdir(parents=True, mode=0o700)
                system.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                            "--quick-gen-key", "enclave sandbox packages <sandbox@enclave.invalid>",
                            "ed25519", "sign", "never"], env=self._env())
                exported = system.run(["gpg", "--batch", "--armor", "--export"], env=self._env()).stdout
                self.public_key_file.write_text(exported)
        return self.public_key_file.read_text()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home / "gnupg")}

    def clearsign(self, release: Path, inrelease: Path) -> None:
        system.run(["gpg", "--batch", "--yes", "--clearsign", "-o", inrelease, release], env=self._env())
        system.run(["gpg", "--batch", "--yes", "--armor", "--detach-sign", "-o",
                    release.with_name("Release.gpg"), release], env=self._env())


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
        except SandboxError:
            # Usually stale package lists on this machine; refresh them once and try again.
            report("refreshing this machine's apt lists (apt-get update)")
            system.run(["apt-get", "update", "-q"], timeout=900)
            self._download(work)
        (work / "partial").rmdir()
        debs = sorted(p.name for p in work.glob("*.deb"))
        if not debs and self.packages:
            raise SandboxError("apt downloaded no packages for the nodes' mirror; is the image already complete?")
        packages_index = system.run(["apt-ftparchive", "packages", "."], cwd=work).stdout
        (work / "Packages").write_text(packages_index)
        release = system.run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=enclave-sandbox",
                              "-o", "APT::FTPArchive::Release::Label=enclave-sandbox", "release", "."],
                             cwd=work).stdout
        (work / "Release").write_text(release)
        self.key.clearsign(work / "Release", work / "InRelease")
        shutil.rmtree(self.path, ignore_errors=True)
        work.rename(self.path)
        report(f"nodes' package mirror ready: {len(debs)} packages")

    def _download(self, dest: Path) -> None:
        system.run(["apt-get", "-q", "-y", "--download-only", "install", *self.packages,
                    "-o", f"Dir::State::status={self.image.dpkg_status()}",
                    "-o", f"Dir::Cache::archives={dest}",
                    "-o", "APT::Install-Recommends=false",
                    "-o", "Debug::NoLocking=1"], timeout=1800)

