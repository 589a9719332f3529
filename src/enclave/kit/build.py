"""`enclave kit build`: collect what an inventory's roles will ask for into one signed directory.

What to collect is data (KitContent), decided by the caller from the inventory and the roles' own defaults;
this module downloads, locks, packs and signs it, and records what it could not fetch (complete: false).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave.errors import EnclaveError, UsageError
from enclave.kit import apt, delta, manifest, wheels
from enclave.kit.manifest import KitKey, Report

APT_DIR = "apt"
APT_KEY = "apt/enclave-kit-archive.asc"


@dataclass(frozen=True)
class WeightsSource:
    repo: str
    revision: str
    source_dir: Path | None = None  # None: download from the hub
    endpoint: str | None = None


@dataclass(frozen=True)
class KitContent:
    packages: tuple[str, ...] = ()
    # Packages from NVIDIA's repository (GPU hosts): collected when this machine's apt has them, else missing.
    gpu_packages: tuple[str, ...] = ()
    # wheelhouse name under wheels/ -> requirements to pip download
    wheelsets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    local_wheels: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    engine_wheelhouse: Path | None = None  # a complete `enclave bundle` directory to carry
    weights: WeightsSource | None = None
    split_bytes: int | None = None
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuiltKit:
    path: Path
    document: dict[str, Any]
    fingerprint: str

    @property
    def complete(self) -> bool:
        return bool(self.document["complete"])


def build(content: KitContent, out: Path, *, key: KitKey, apt_key: apt.SigningKey, report: Report,
          since: Path | None = None, since_signers: str | None = None,
          dpkg_status: Path | None = None) -> BuiltKit:
    if out.exists():
        raise UsageError(f"--out {out}: exists; a kit is built into a new directory")
    old = None
    if since is not None:
        from enclave.kit.verify import verify_kit

        if since_signers is None:
            since_signers = f"{manifest.IDENTITY} namespaces=\"{manifest.NAMESPACE}\" {key.ensure()}\n"
        report(f"verifying the base kit {since}")
        old = verify_kit(since, since_signers, report)
    work = out.with_name(f".{out.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        missing = _collect(content, work, apt_key, report, dpkg_status)
        files = manifest.hash_tree(work, report)
        document = {"format": manifest.KIT_FORMAT, "complete": not missing, "missing": missing,
                    "contents": _contents(content), "files": files}
        fingerprint = manifest.write_manifest(work, document, key)
        if old is not None and since is not None:
            info = delta.prune(work, delta.unchanged(old, files), since, key)
            report(f"delta against {since}: {info['carried']} files carried, {info['left_out']} left out")
        try:
            work.rename(out)
        except OSError as exc:  # something made --out while the kit was built
            raise EnclaveError(f"--out {out}: something made it while the kit was built ({exc.strerror}); build "
                               "again into a new directory") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BuiltKit(out, document, fingerprint)


def _contents(content: KitContent) -> dict[str, Any]:
    return {"packages": sorted(content.packages), "gpu_packages": sorted(content.gpu_packages),
            "wheelhouses": sorted(content.wheelsets) + (["engine"] if content.engine_wheelhouse else []),
            "weights": ({"repo": content.weights.repo, "revision": content.weights.revision}
                        if content.weights else None)}


def _collect(content: KitContent, work: Path, apt_key: apt.SigningKey, report: Report,
             dpkg_status: Path | None) -> list[str]:
    missing: list[str] = []
    wanted = [*content.packages, *content.gpu_packages]
    if wanted:
        missing += _packages(wanted, work / APT_DIR, apt_key, report, dpkg_status)
    for name, requirements in sorted(content.wheelsets.items()):
        report(f"downloading the {name} wheelhouse: {' '.join(requirements) or 'local wheels'}")
        wheels.download(work / "wheels" / name, requirements, pip_args=content.pip_args,
                        local_wheels=content.local_wheels.get(name, ()))
    if content.engine_wheelhouse is not None:
        source = content.engine_wheelhouse
        if not (source / "bundle.json").is_file():
            raise EnclaveError(f"engine wheelhouse {source}: incomplete (no bundle.json); run `enclave bundle`")
        report(f"copying the engine wheelhouse {source.name}")
        shutil.copytree(source, work / "wheels" / "engine" / source.name)
    if content.weights is not None:
        from enclave.weights import bundle

        w = content.weights
        report(f"packing the weights {w.repo}@{w.revision}")
        (work / "weights").mkdir()
        bundle.pack(repo=w.repo, revision=w.revision, out_dir=work / "weights", source_dir=w.source_dir,
                    endpoint=w.endpoint, split_bytes=content.split_bytes, report=report)
    return missing


def _packages(wanted: list[str], repo: Path, apt_key: apt.SigningKey, report: Report,
              dpkg_status: Path | None) -> list[str]:
    absent = apt.unavailable(wanted)
    for name in absent:
        report(f"cannot fetch package {name}: this machine's apt sources do not carry it")
    fetch = [p for p in wanted if p not in absent]
    repo.mkdir(parents=True)
    if fetch:
        report(f"downloading {len(fetch)} packages and their dependencies")
        with tempfile.TemporaryDirectory(prefix="enclave-kit-dpkg-") as tmp:
            status = dpkg_status
            if status is None:  # nothing assumed installed on the site's hosts: every dependency travels
                status = Path(tmp) / "status"
                status.write_text("")
            apt.download(fetch, repo, dpkg_status=status)
        apt_key.ensure()
        count = apt.index(repo, apt_key, label="enclave-kit")
        shutil.copy2(apt_key.public_key_file, repo.parent / APT_KEY)
        report(f"apt repository: {count} packages")
    return [f"package {name}" for name in absent]
