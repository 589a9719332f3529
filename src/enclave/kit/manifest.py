"""KIT.json: the size and sha256 of every file of a kit, signed with OpenSSH's `ssh-keygen -Y` like the weights.

KIT.json is deterministic (no timestamps, sorted keys and files): two builds of the same content give the same
bytes, which is what lets a delta applied to an old kit be compared with a fresh build.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.errors import EnclaveError, UsageError
from enclave.hashing import sha256_file

Report = Callable[[str], None]
KIT_FORMAT = 1
MANIFEST = "KIT.json"
SIGNATURE = "KIT.json.sig"
PUBLIC_KEY = "KIT.pub"
SUMS = "KIT.sha256"
DELTA = "DELTA.json"
NAMESPACE = "enclave-kit"
IDENTITY = "enclave-kit"
# Files that describe the kit rather than belong to it: never listed in KIT.json.
META = frozenset({MANIFEST, SIGNATURE, PUBLIC_KEY, SUMS, DELTA, DELTA + ".sig"})


class KitRefused(EnclaveError):
    """A kit that fails verification (bad signature, a file missing or changed)."""


def list_files(root: Path) -> list[str]:
    """Every regular file under root except the kit's own metadata, as sorted POSIX relative paths."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise UsageError(f"{path}: a kit holds no symlinks (they would not survive removable media)")
        if path.is_file() and rel not in META:
            found.append(rel)
    return sorted(found)


def hash_tree(root: Path, report: Report) -> list[dict[str, Any]]:
    names = list_files(root)
    report(f"hashing {len(names)} files")
    return [{"path": n, "size": (root / n).stat().st_size, "sha256": sha256_file(root / n)} for n in names]


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def sums_text(files: list[dict[str, Any]]) -> str:
    return "".join(f"{f['sha256']}  {f['size']}  {f['path']}\n" for f in files)


@dataclass(frozen=True)
class KitKey:
    """The ed25519 key that signs kits, made once per path (default: the controller's state dir)."""

    path: Path

    def ensure(self) -> str:
        """The public key line; generates the key on first use."""
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _ssh_keygen(["-q", "-t", "ed25519", "-N", "", "-C", IDENTITY, "-f", str(self.path)],
                        f"generate the kit key {self.path}")
        return self.path.with_name(self.path.name + ".pub").read_text().strip()


def fingerprint(public_key: str) -> str:
    with tempfile.TemporaryDirectory(prefix="enclave-kit-") as tmp:
        pub = Path(tmp) / "key.pub"
        pub.write_text(public_key + "\n")
        out = _ssh_keygen(["-l", "-E", "sha256", "-f", str(pub)], "read the kit key's fingerprint")
    return out.split()[1]


def _ssh_keygen(args: list[str], what: str, data: bytes | None = None) -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise EnclaveError("ssh-keygen not found on PATH; install openssh-client")
    proc = subprocess.run([exe, *args], input=data, capture_output=True, check=False,
                          stdin=None if data is not None else subprocess.DEVNULL)
    if proc.returncode != 0:
        why = " ".join((proc.stderr + proc.stdout).decode("utf-8", "replace").split()) or "no message"
        raise KitRefused(f"ssh-keygen could not {what}: {why}")
    return proc.stdout.decode("utf-8", "replace")


def sign_file(target: Path, key: KitKey) -> Path:
    """Write TARGET.sig. ssh-keygen signs a private copy (it would ask before overwriting an old .sig)."""
    key.ensure()
    with tempfile.TemporaryDirectory(prefix="enclave-kit-sign-") as tmp:
        copy = Path(tmp) / target.name
        copy.write_bytes(target.read_bytes())
        _ssh_keygen(["-Y", "sign", "-f", str(key.path), "-n", NAMESPACE, str(copy)], f"sign {target}")
        sig = target.with_name(target.name + ".sig")
        sig.write_bytes(copy.with_name(copy.name + ".sig").read_bytes())
    return sig


def write_manifest(root: Path, document: dict[str, Any], key: KitKey) -> str:
    """Write KIT.json, KIT.sha256, KIT.pub and the signature; returns the key's fingerprint."""
    public = key.ensure()
    (root / MANIFEST).write_text(render(document))
    (root / SUMS).write_text(sums_text(document["files"]))
    (root / PUBLIC_KEY).write_text(public + "\n")
    sign_file(root / MANIFEST, key)
    return fingerprint(public)


def allowed_signers_for_pin(root: Path, pin: str) -> str:
    """allowed_signers text for the kit's own KIT.pub, after its fingerprint matched the pin."""
    pub = root / PUBLIC_KEY
    if not pub.is_file():
        raise KitRefused(f"{pub}: missing; the kit cannot be checked against --pin")
    public = pub.read_text().strip()
    seen = fingerprint(public)
    if seen != pin:
        raise KitRefused(f"{pub}: signed by {seen}, not the pinned {pin}")
    return f"{IDENTITY} namespaces=\"{NAMESPACE}\" {public}\n"


def verify_signature(target: Path, allowed_signers: str) -> bytes:
    """The exact bytes of TARGET whose signature checked out (parse these, never a reread)."""
    sig = target.with_name(target.name + ".sig")
    for needed in (target, sig):
        if not needed.is_file():
            raise KitRefused(f"{needed}: missing")
    data = target.read_bytes()
    with tempfile.TemporaryDirectory(prefix="enclave-kit-verify-") as tmp:
        signers = Path(tmp) / "allowed_signers"
        signers.write_text(allowed_signers)
        _ssh_keygen(["-Y", "verify", "-f", str(signers), "-I", IDENTITY, "-n", NAMESPACE, "-s", str(sig)],
                    f"verify the signature of {target}", data=data)
    return data


def load(root: Path, allowed_signers: str) -> dict[str, Any]:
    data = verify_signature(root / MANIFEST, allowed_signers)
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise KitRefused(f"{root / MANIFEST}: not JSON ({exc})") from None
    if document.get("format") != KIT_FORMAT:
        raise KitRefused(f"{root / MANIFEST}: format {document.get('format')!r}, this enclave reads {KIT_FORMAT}")
    return dict(document)


def check_files(root: Path, document: dict[str, Any], report: Report, *, present_only: bool = False) -> list[str]:
    """One line per file of the manifest that is missing (unless present_only) or whose size/sha256 differ,
    and per file in the directory the manifest does not list."""
    problems = []
    listed = {f["path"]: f for f in document["files"]}
    report(f"checking {len(listed)} files against {MANIFEST}")
    for rel, entry in listed.items():
        path = root / rel
        if not path.is_file():
            if not present_only:
                problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{rel}: size {path.stat().st_size}, the manifest says {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    problems += [f"{rel}: not in the manifest" for rel in list_files(root) if rel not in listed]
    return problems
