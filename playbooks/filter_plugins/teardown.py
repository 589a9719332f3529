"""What teardown removes, decided in one pure function (the unit test calls it directly and through Ansible).

Kept in Python (standard library only, no enclave import: plain ansible-playbook must find it) so the path rules
that decide what is deleted are testable without a host.

Rules: only a directory the kit created (the base role records those in the created-paths manifest) is removed;
one that existed before the first deploy is left, contents and all. With kept paths (--keep-weights), every
ancestor of a kept path stays and only its other entries go, so a models directory nested anywhere below the
kit's root survives.
"""

from __future__ import annotations

import posixpath
from typing import Any


def _norm(path: str) -> str:
    return posixpath.normpath(str(path))


def _ancestors(path: str) -> list[str]:
    found, parent = [], posixpath.dirname(path)
    while parent not in ("/", ""):
        found.append(parent)
        parent = posixpath.dirname(parent)
    return found


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def teardown_plan(dirs: list[str], created: list[str], kept: list[str]) -> dict[str, Any]:
    """{'remove': directories removed whole, 'prune': directories whose entries go except those in 'keep',
    'keep': the kept paths and their ancestors, 'left': kit directories the kit did not create (left alone)}.

    `dirs`: the kit's directories; `created`: those of them the kit created (the manifest); `kept`: paths kept."""
    dirs = list(dict.fromkeys(_norm(d) for d in dirs))
    created_set = {_norm(c) for c in created}
    ours = [d for d in dirs if d in created_set]
    # A kit directory inside another one the kit created goes with that one.
    tops = [d for d in ours if not any(o != d and _within(d, o) for o in ours)]
    kept = [_norm(k) for k in kept if any(_within(_norm(k), top) for top in tops)]
    keep = sorted({*kept, *(a for k in kept for a in _ancestors(k))})
    prune = sorted(a for a in keep if a not in kept and any(_within(a, top) for top in tops))
    remove = [top for top in tops if top not in keep]
    left = [d for d in dirs if not any(_within(d, top) for top in tops)]
    return {"remove": remove, "prune": prune, "keep": keep, "left": left}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"teardown_plan": teardown_plan}
