"""Filters for pinning the weights signer on the controller (roles/weights/tasks/signer.yml).

The pin file is the controller's known_hosts for the staging host's manifest-signing key: comment lines, then one
line whose first word is the key's OpenSSH fingerprint (`SHA256:` and 43 base64 characters, as `ssh-keygen -l`
prints it). `enclave weights rekey` writes the same format (src/enclave/weights/signer.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def ssh_fingerprint(public_key: str) -> str:
    """The SHA256 fingerprint of an OpenSSH public key line (`TYPE BASE64 [COMMENT]`), as ssh-keygen -l shows it."""
    words = str(public_key).split()
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (IndexError, binascii.Error):
        raise AnsibleFilterError(f"not an OpenSSH public key: {str(public_key)[:60]!r}") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def pinned_fingerprint(path: str) -> str:
    """The fingerprint pinned in `path`; '' when there is no such file yet (first staging)."""
    pin = Path(path)
    if not pin.exists():
        return ""
    try:
        lines = [line.strip() for line in pin.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AnsibleFilterError(f"{pin}: cannot read the pinned weights signer: {exc}") from None
    words = next((line.split() for line in lines if line and not line.startswith("#")), [])
    if not words or not FINGERPRINT_RE.fullmatch(words[0]):
        raise AnsibleFilterError(f"{pin}: no SHA256 fingerprint in the pinned weights signer file; restore it, or "
                                 "pin the staging host's key with `enclave weights rekey --fingerprint SHA256:...`")
    return words[0]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"enclave_ssh_fingerprint": ssh_fingerprint, "enclave_pinned_fingerprint": pinned_fingerprint}
