"""Signing and checking manifests with OpenSSH's `ssh-keygen -Y`: present on every host already, no new dependency."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .common import MANIFEST_NAME, SIGNATURE_NAME, require_dir, write_atomic
from .errors import CheckFailed, InputError
from .manifest import Manifest, parse_manifest, read_manifest

SIGN_NAMESPACE = "enclave-weights"


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise InputError("ssh-keygen not found on PATH; install openssh-client")
    return exe


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "no message"


def sign_manifest(directory: Path, key: Path) -> Path:
    """Sign DIR/MANIFEST.sha256 into DIR/MANIFEST.sha256.sig.

    ssh-keygen signs a private copy: it asks on the terminal before overwriting an existing .sig (and silently keeps
    the old one when nobody answers), and the copy means the bytes signed are the bytes just parsed.
    """
    require_dir(directory)
    data = (directory / MANIFEST_NAME).read_bytes() if (directory / MANIFEST_NAME).is_file() else None
    if data is None:
        raise InputError(f"no manifest at {directory / MANIFEST_NAME}; build one with 'manifest build'")
    parse_manifest(data)
    if not key.is_file():
        raise InputError(f"signing key {key} does not exist")
    with tempfile.TemporaryDirectory(prefix="enclave-sign-") as tmp:
        copy = Path(tmp) / MANIFEST_NAME
        copy.write_bytes(data)
        proc = subprocess.run([_ssh_keygen(), "-Y", "sign", "-f", str(key), "-n", SIGN_NAMESPACE, str(copy)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        sig = copy.with_name(SIGNATURE_NAME)
        if proc.returncode != 0 or not sig.is_file():
            raise CheckFailed(f"ssh-keygen could not sign {directory / MANIFEST_NAME}: {_one_line(proc.stderr)}")
        write_atomic(directory / SIGNATURE_NAME, sig.read_bytes())
    return directory / SIGNATURE_NAME


@dataclass(frozen=True)
class Signers:
    """Who may sign manifests: an OpenSSH allowed_signers file and the identity expected in it."""

    allowed: Path
    identity: str


def load_manifest(directory: Path, signers: Signers | None = None) -> Manifest:
    """The manifest to trust: when `signers` is given, parsed from exactly the bytes whose signature was checked."""
    if signers is None:
        return read_manifest(directory)
    data = verify_signature(directory, signers.allowed, signers.identity)
    try:
        return parse_manifest(data)
    except InputError as e:
        raise InputError(f"{directory / MANIFEST_NAME}: {e}") from e


def verify_signature(directory: Path, allowed_signers: Path, identity: str) -> bytes:
    """Check the manifest's signature and return the exact bytes that were verified, so a caller can parse those
    bytes rather than reread a file that might have been swapped in between."""
    manifest_path, sig_path = directory / MANIFEST_NAME, directory / SIGNATURE_NAME
    if not manifest_path.is_file():
        raise InputError(f"no manifest at {manifest_path}")
    if not sig_path.is_file():
        raise CheckFailed(f"no signature at {sig_path}; sign the manifest on the staging host with 'sign'")
    if not allowed_signers.is_file():
        raise InputError(f"allowed signers file {allowed_signers} does not exist")
    data = manifest_path.read_bytes()
    proc = subprocess.run(
        [_ssh_keygen(), "-Y", "verify", "-f", str(allowed_signers), "-I", identity, "-n", SIGN_NAMESPACE,
         "-s", str(sig_path)],
        input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        why = _one_line(proc.stderr.decode("utf-8", "replace") + proc.stdout.decode("utf-8", "replace"))
        raise CheckFailed(f"signature check failed for {manifest_path} (identity {identity!r}): {why}")
    return data
