"""The one rule for a model revision, wherever one is given: the inventory (`enclave_model_revision`), a model
profile, `enclave update --model-revision`, `enclave weights ... --revision`, a bundle's BUNDLE.json, and the weights
role (`weights_revision`, checked in roles/weights/tasks/validate.yml against this same pattern).

A revision is a 40-hex commit id, whatever the weights source (the hub, a directory on the staging host, an HTTP
server): a branch or tag name can move under a deployed cluster, and one rule for every source means a revision
staged from a bundle or a directory is named the way the hub would name it. The on-host tools (hubfetch.py, run with
the system Python on the staging host) keep a copy of the pattern; tests/unit/test_revision_rule.py holds every copy
to this one. nodetool only checks that a revision directory name is safe as a path: it is handed names this rule
already passed, and manages the directories nodes hold.
"""

from __future__ import annotations

import re

from enclave.errors import UsageError

REVISION_RE = re.compile(r"[0-9a-f]{40}")
RULE = "a 40-hex commit id (lower case)"


def is_revision(value: object) -> bool:
    return isinstance(value, str) and REVISION_RE.fullmatch(value) is not None


def check_revision(value: object, where: str) -> str:
    """`value` if it is a revision, else a UsageError naming `where` (a key, an option, a file)."""
    if not is_revision(value):
        raise UsageError(f"{where} must be {RULE}, got {value!r}"[:300])
    return str(value)
