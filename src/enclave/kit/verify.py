"""`enclave kit verify`: the signature of KIT.json, then every file against it. Nothing is trusted before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enclave.errors import UsageError
from enclave.kit import manifest
from enclave.kit.manifest import KitRefused, Report


def _quiet(_: str) -> None:
    pass


def signers_text(root: Path, *, pin: str | None, allowed_signers: Path | None) -> str:
    """The allowed_signers content to check the kit with: exactly one of a pinned fingerprint or a file."""
    if (pin is None) == (allowed_signers is None):
        raise UsageError("give exactly one of --pin FINGERPRINT or --allowed-signers FILE")
    if allowed_signers is not None:
        if not allowed_signers.is_file():
            raise UsageError(f"--allowed-signers {allowed_signers}: no such file")
        return allowed_signers.read_text()
    assert pin is not None
    if not pin.startswith("SHA256:"):
        raise UsageError(f"--pin {pin!r}: expected an OpenSSH fingerprint (SHA256:...), as `kit build` printed it")
    return manifest.allowed_signers_for_pin(root, pin)


def verify_kit(root: Path, signers: str, report: Report = _quiet) -> dict[str, Any]:
    """The verified manifest of the kit at root; KitRefused names every file that is missing or changed."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    if (root / manifest.DELTA).exists():
        raise KitRefused(f"{root} is a delta kit; apply it to its base with `enclave kit apply-delta` first")
    document = manifest.load(root, signers)
    problems = manifest.check_files(root, document, report)
    if problems:
        raise KitRefused(f"{root}: " + "; ".join(problems[:20])
                         + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))
    return document
