"""The controller's pin of the weights signer: the staging host's manifest-signing key, by fingerprint.

Like ssh's known_hosts: the weights role pins the key at first staging and refuses a different one afterwards
(playbooks/roles/weights/tasks/signer.yml, which reads this file with playbooks/filter_plugins/enclave_signer.py).
It sits beside the inventory, in the kit's pki directory (inventory_layout.kit_dir), because it belongs to the
cluster the inventory describes, not to one controller: a second operator's checkout of the same inventory
trusts the same key, and a new controller does not silently trust whatever key it sees first.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from enclave import atomic
from enclave.errors import UsageError
from enclave.inventory_layout import kit_dir

PIN_NAME = "weights-signer"
FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
HEADER = ("# The staging host's weights signing key (OpenSSH fingerprint): nodes trust manifests signed by this key\n"
          "# only. Pinned at first staging; change it only with `enclave weights rekey` (docs/runbooks/weights.md).\n")


def pin_path(inventory: Path) -> Path:
    return kit_dir(inventory, "pki") / PIN_NAME


def read_pin(inventory: Path) -> str | None:
    """The pinned fingerprint, None before the first staging."""
    path = pin_path(inventory)
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            if FINGERPRINT_RE.fullmatch(words[0]):
                return words[0]
            break
    raise UsageError(f"{path}: no SHA256 fingerprint in the pinned weights signer file; restore it from version "
                     "control, or pin the staging host's key again with --fingerprint")


def write_pin(inventory: Path, fingerprint: str, note: str) -> Path:
    """Pin `fingerprint` (checked), atomically; `note` follows it on its line (who pinned it, when)."""
    if not FINGERPRINT_RE.fullmatch(fingerprint):
        raise UsageError(f"--fingerprint {fingerprint!r}: not an OpenSSH SHA256 fingerprint (SHA256: and 43 base64 "
                         "characters, as the refusal message and `ssh-keygen -lf KEY.pub` print it)")
    path = pin_path(inventory)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic.write_text(path, f"{HEADER}{fingerprint} {note} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    return path
