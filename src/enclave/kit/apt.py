"""A signed flat apt repository of Debian packages and their dependencies, built with this machine's apt.

Shared by the sandbox (its nodes' stand-in mirror, sandbox/pkgrepo.py) and the offline site kit (build.py).
Packages this machine's apt sources do not carry (NVIDIA's driver, fabric manager and DCGM come from NVIDIA's
repository) are named as missing rather than failing the whole download, so a kit can say exactly what it lacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from enclave.errors import EnclaveError

Report = Callable[[str], None]

# The roles' package lists every enclave host installs (the nvidia role's GPU lists are separate: kit/content.py
# adds them for a plan with GPUs; the sandbox has none). A role that installs packages on every host adds its
# list's name here.
HOST_PACKAGE_LISTS = ("base_packages", "weights_staging_packages", "engine_packages", "firewall_packages",
                      "gateway_packages", "monitoring_node_packages", "monitoring_gateway_packages",
                      "monitoring_packages", "offline_kit_packages")


def run(cmd: Sequence[str | Path], *, timeout: float = 1800, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> str:
    args = [str(c) for c in cmd]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise EnclaveError(f"{args[0]} is not installed ({exc}); apt-get install apt-utils gnupg") from exc
    except subprocess.TimeoutExpired as exc:
        raise EnclaveError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise EnclaveError(f"`{' '.join(args)}` failed with exit {proc.returncode}: "
                           + (" | ".join(said[-5:]) if said else "no output"))
    return proc.stdout


def role_packages(roles_dir: Path, lists: Iterable[str]) -> list[str]:
    """Every package the named lists of the roles' defaults hold (the roles' own lists: no second copy)."""
    wanted = tuple(lists)
    packages: set[str] = set()
    for defaults in sorted(roles_dir.glob("*/defaults/main.yml")):
        data = yaml.safe_load(defaults.read_text()) or {}
        for key in wanted:
            packages.update(str(p) for p in data.get(key) or [] if isinstance(p, str) and "{{" not in p)
    return sorted(packages)


@dataclass(frozen=True)
class SigningKey:
    """A gpg key of its own that signs the repository's Release file."""

    home: Path
    uid: str = "enclave sandbox packages <sandbox@enclave.invalid>"

    @property
    def public_key_file(self) -> Path:
        return self.home / "public.asc"

    def ensure(self) -> str:
        from enclave.locks import file_lock

        with file_lock(self.home.with_suffix(".lock")):
            if not self.public_key_file.is_file():
                gnupg = self.home / "gnupg"
                shutil.rmtree(gnupg, ignore_errors=True)
                gnupg.mkdir(parents=True, mode=0o700)
                run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                     "--quick-gen-key", self.uid, "ed25519", "sign", "never"], env=self._env())
                self.public_key_file.write_text(run(["gpg", "--batch", "--armor", "--export"], env=self._env()))
        return self.public_key_file.read_text()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home / "gnupg")}

    def clearsign(self, release: Path, inrelease: Path) -> None:
        run(["gpg", "--batch", "--yes", "--clearsign", "-o", inrelease, release], env=self._env())
        run(["gpg", "--batch", "--yes", "--armor", "--detach-sign", "-o", release.with_name("Release.gpg"),
             release], env=self._env())


def unavailable(packages: Sequence[str]) -> list[str]:
    """The packages this machine's apt has no installable candidate for (one apt-cache call)."""
    out = run(["apt-cache", "policy", *packages], timeout=120)
    candidates: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            candidates[current] = line.split(":", 1)[1].strip()
    return [p for p in packages if candidates.get(p, "(none)") == "(none)"]


def download(packages: Sequence[str], dest: Path, *, dpkg_status: Path) -> None:
    """The packages and every dependency not installed per dpkg_status (an empty file: every dependency)."""
    partial = dest / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "-q", "-y", "--download-only", "install", *packages,
         "-o", f"Dir::State::status={dpkg_status}",
         "-o", f"Dir::Cache::archives={dest}",
         "-o", "APT::Install-Recommends=false",
         "-o", "Debug::NoLocking=1"])
    shutil.rmtree(partial, ignore_errors=True)
    (dest / "lock").unlink(missing_ok=True)


def index(repo: Path, key: SigningKey, *, label: str) -> int:
    """Packages, Release, InRelease and Release.gpg for the .debs in repo; returns how many."""
    key.ensure()
    debs = sorted(repo.glob("*.deb"))
    (repo / "Packages").write_text(run(["apt-ftparchive", "packages", "."], cwd=repo))
    release = run(["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Origin={label}",
                   "-o", f"APT::FTPArchive::Release::Label={label}", "release", "."], cwd=repo)
    (repo / "Release").write_text(release)
    key.clearsign(repo / "Release", repo / "InRelease")
    return len(debs)
