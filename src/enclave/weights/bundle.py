"""Air-gap bundles: `enclave weights pack` on a connected machine, `enclave weights import` inside.

A bundle is a directory `<org>--<name>--<revision>/` holding either `files/` (the model's files and their
MANIFEST.sha256) or, with a split size, `bundle.tar.000`, `bundle.tar.001`, ... cut from one tar of the files plus
`MANIFEST.sha256` beside them; and always:

    SHA256SUMS        sha256sum lines for every file of the bundle (the manifest, and the parts or the files)
    BUNDLE.json       repo, revision, layout and part count, for import

MANIFEST.sha256 records size and sha256 of every model file, with repo, revision, source and fetch time.

Import checks SHA256SUMS, joins the parts if there are any, checks every file against the manifest, and leaves a
directory the weights role stages as a `local` source; nothing is trusted before it verified.
"""

from __future__ import annotations

import json
import shutil
import socket
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enclave.errors import EnclaveError, UsageError
from enclave.hashing import sha256_file
from enclave.hosttools.build import REPO_RE, build_manifest
from enclave.hosttools.common import HUB_CLIENT_DIR, MANIFEST_NAME, SIGNATURE_NAME, STAMPS_NAME
from enclave.hosttools.errors import NodeToolError
from enclave.hosttools.manifest import Manifest
from enclave.hosttools.verify import verify_tree
from enclave.revision import check_revision

Report = Callable[[str], None]
BUNDLE_FORMAT = 1
SUMS_NAME = "SHA256SUMS"
INFO_NAME = "BUNDLE.json"
PART_PREFIX = "bundle.tar."
CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    path: Path
    repo: str
    revision: str
    files: int
    bytes: int
    parts: int


def _quiet(_: str) -> None:
    pass


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """One TCP connect first: the hub client retries an unreachable host for half a minute before it says so."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--endpoint {url!r}: not an http(s) URL")
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot reach {url} ({exc}); on a machine without the hub, pass --source DIR") from None


def fetch_from_hub(repo: str, revision: str, dest: Path, endpoint: str | None, report: Report) -> Path:
    """Download with the real client (a connected machine); returns the expectations file the hub's listing gave."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as e:
        raise UsageError("packing from the hub needs the huggingface_hub client: pip install huggingface_hub") from e
    from enclave.hosttools.hubfetch import expectations

    where = endpoint or "https://huggingface.co"
    _check_reachable(where)
    api = HfApi(endpoint=endpoint)
    report(f"listing {repo}@{revision}")
    try:
        expect = expectations(api, repo, revision)
        report(f"downloading {len(expect)} files ({sum(e['size'] for e in expect.values())} bytes)")
        snapshot_download(repo_id=repo, revision=revision, local_dir=str(dest), endpoint=endpoint)
    except EnclaveError:
        raise
    except Exception as exc:  # httpx, requests and hub errors alike: no route, no repo, no access
        raise UsageError(f"{repo}@{revision}: cannot download from {where} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); on a machine without the hub, "
                         "pass --source DIR") from None
    shutil.rmtree(dest / HUB_CLIENT_DIR, ignore_errors=True)
    out = dest.parent / f".{dest.name}.expect.json"
    out.write_text(json.dumps(expect))
    return out


def pack(*, repo: str, revision: str, out_dir: Path, source_dir: Path | None = None, endpoint: str | None = None,
         split_bytes: int | None = None, license_file: Path | None = None, report: Report = _quiet) -> Bundle:
    if not REPO_RE.fullmatch(repo):
        raise UsageError(f"--repo {repo!r}: expected ORG/NAME")
    check_revision(revision, "--revision")
    if source_dir is not None and not source_dir.is_dir():
        raise UsageError(f"--source {source_dir}: not a directory")
    if license_file is not None and not license_file.is_file():
        raise UsageError(f"--license-file {license_file}: no such file")
    bundle = out_dir / f"{repo.replace('/', '--')}--{revision}"
    if bundle.exists():
        raise UsageError(f"{bundle} exists; remove it or choose another --out")
    work = out_dir / f".{bundle.name}.partial"
    try:
        return _pack(repo, revision, bundle, work, source_dir, endpoint, split_bytes, license_file, report)
    except NodeToolError as exc:  # the node tool's own errors (no LICENSE, ...): not a traceback
        said = str(exc).replace(str(work / "files"), str(source_dir or f"{repo}@{revision}"))
        raise (UsageError if exc.exit_code == 2 else EnclaveError)(said) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a failed pack leaves nothing behind


def _pack(repo: str, revision: str, bundle: Path, work: Path, source_dir: Path | None, endpoint: str | None,
          split_bytes: int | None, license_file: Path | None, report: Report) -> Bundle:
    files = work / "files"
    files.mkdir(parents=True, exist_ok=True)
    if source_dir is not None:
        report(f"copying {source_dir}")
        shutil.copytree(source_dir, files, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(MANIFEST_NAME, SIGNATURE_NAME,
                                                      STAMPS_NAME, SUMS_NAME))
        expect, source = None, f"local:{source_dir}"
    else:
        expect = fetch_from_hub(repo, revision, files, endpoint, report)
        source = f"hf:{endpoint or 'https://huggingface.co'}"
    report("hashing every file into MANIFEST.sha256")
    built = build_manifest(files, repo=repo, revision=revision, source=source, expect_json=expect,
                                    license_file=license_file)
    (files / STAMPS_NAME).unlink(missing_ok=True)
    staged = work / "bundle"
    staged.mkdir()
    parts = 0
    if split_bytes:
        shutil.move(str(files / MANIFEST_NAME), staged / MANIFEST_NAME)
        parts = _write_parts(files, built.manifest, staged, split_bytes, report)
        shutil.rmtree(files)
        sums = [f"{sha256_file(staged / MANIFEST_NAME)}  {MANIFEST_NAME}"]
        sums += [f"{sha256_file(staged / f'{PART_PREFIX}{i:03d}')}  {PART_PREFIX}{i:03d}" for i in range(parts)]
    else:
        shutil.rmtree(files / HUB_CLIENT_DIR, ignore_errors=True)
        files.rename(staged / "files")
        sums = [f"{sha256_file(staged / 'files' / MANIFEST_NAME)}  files/{MANIFEST_NAME}"]
        sums += [f"{e.sha256}  files/{e.path}" for e in built.manifest.entries]  # hashed once, above
    (staged / SUMS_NAME).write_text("\n".join(sums) + "\n")
    info = {"format": BUNDLE_FORMAT, "repo": repo, "revision": revision, "files": built.manifest.files,
            "bytes": built.manifest.total_bytes, "parts": parts}
    (staged / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n")
    staged.rename(bundle)
    return Bundle(bundle, repo, revision, built.manifest.files, built.manifest.total_bytes, parts)


class _PartWriter:
    """A file-like that cuts what is written into numbered parts of at most `size` bytes."""

    def __init__(self, directory: Path, size: int) -> None:
        self.directory, self.size, self.count, self.used = directory, size, 0, 0
        self.current = (directory / f"{PART_PREFIX}000").open("wb")

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self.used == self.size:
                self.current.close()
                self.count += 1
                self.current = (self.directory / f"{PART_PREFIX}{self.count:03d}").open("wb")
                self.used = 0
            n = min(len(view), self.size - self.used)
            self.current.write(view[:n])
            self.used += n
            view = view[n:]
        return len(data)

    def close(self) -> int:
        self.current.close()
        return self.count + 1


def _write_parts(files: Path, manifest: Manifest, out: Path, size: int, report: Report) -> int:
    report(f"writing the tar in parts of {size} bytes")
    writer = _PartWriter(out, size)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for entry in manifest.entries:
            info = tar.gettarinfo(str(files / entry.path), arcname=entry.path)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with (files / entry.path).open("rb") as f:
                tar.addfile(info, f)
    return writer.close()


class _PartReader:
    def __init__(self, parts: list[Path]) -> None:
        self.parts = parts
        self.index = 0
        self.current = parts[0].open("rb")

    def read(self, n: int = -1) -> bytes:
        while True:
            data = self.current.read(n if n > 0 else CHUNK)
            if data or self.index + 1 >= len(self.parts):
                return data
            self.current.close()
            self.index += 1
            self.current = self.parts[self.index].open("rb")


def _read_info(info_file: Path) -> dict[str, Any]:
    """BUNDLE.json, checked before anything of the bundle is trusted: the repository and revision it names become
    a directory on the staging host."""
    try:
        info = json.loads(info_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{info_file}: not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise UsageError(f"{info_file}: expected a JSON object")
    if not (isinstance(info.get("repo"), str) and REPO_RE.fullmatch(info["repo"])):
        raise UsageError(f"{info_file}: 'repo' must be ORG/NAME, got {info.get('repo')!r}")
    check_revision(info.get("revision"), f"{info_file}: 'revision'")
    parts = info.get("parts")
    if not (isinstance(parts, int) and not isinstance(parts, bool) and parts >= 0):
        raise UsageError(f"{info_file}: 'parts' must be a whole number >= 0, got {parts!r}")
    return info


def check(bundle: Path, dest: Path | None = None, report: Report = _quiet) -> tuple[dict[str, Any], Path]:
    """Verify a bundle; return its info and the directory holding its model files and manifest, verified."""
    info_file = bundle / INFO_NAME
    if not info_file.is_file():
        raise UsageError(f"{bundle}: no {INFO_NAME}; not a bundle made by `enclave weights pack`")
    info = _read_info(info_file)
    report(f"checking {SUMS_NAME}")
    sums = (bundle / SUMS_NAME).read_text().splitlines()
    manifest_rel = MANIFEST_NAME if info["parts"] else f"files/{MANIFEST_NAME}"
    listed = dict(reversed(line.split("  ", 1)) for line in sums if "  " in line)
    if manifest_rel not in listed:
        raise EnclaveError(f"{bundle}: {SUMS_NAME} does not cover {manifest_rel}")
    # The parts (or the manifest) are checked here; the model files are checked against the manifest below.
    for rel, digest in listed.items():
        if (info["parts"] or rel == manifest_rel) and sha256_file(bundle / rel) != digest:
            raise EnclaveError(f"{bundle / rel}: sha256 does not match {SUMS_NAME}; the bundle was damaged")
    files = bundle / "files"
    if info["parts"]:
        files = dest or bundle.parent / f"{bundle.name}.files"
        files.mkdir(parents=True, exist_ok=True)
        report(f"joining {info['parts']} parts into {files}")
        parts = [bundle / f"{PART_PREFIX}{i:03d}" for i in range(info["parts"])]
        with tarfile.open(fileobj=_PartReader(parts), mode="r|") as tar:  # type: ignore[call-overload]
            tar.extractall(files, filter="data")
        shutil.copy2(bundle / MANIFEST_NAME, files / MANIFEST_NAME)
    report("checking every file against MANIFEST.sha256")
    verified = verify_tree(files, deep=True)
    if not verified.ok:
        raise EnclaveError(f"{files}: {len(verified.problems)} file(s) do not match the manifest, first: "
                           f"{verified.problems[0].describe()}")
    return info, files
