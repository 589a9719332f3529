"""Revisions of a model directory: verify one, switch `current` to it atomically, prune old ones; and what a model
directory holds (`status`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import SIGNATURE_NAME, TMP_PREFIX, fsync_dir, require_dir, write_atomic
from .errors import CheckFailed, InputError, NodeToolError
from .manifest import Manifest, read_manifest
from .signatures import Signers, load_manifest
from .verify import VerifyReport, verify_tree

ACTIVATIONS_NAME = ".enclave-activations.json"
CURRENT_LINK = "current"
REVISION_DIR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
LAST_TRANSFER_NAME = ".enclave-last-transfer.json"  # written by the weights role after bytes moved


@dataclass
class ActivateResult:
    revision: str
    previous: str | None
    changed: bool
    kept: list[str]
    removed: list[str]
    verify: VerifyReport

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "previous": self.previous, "changed": self.changed, "kept": self.kept,
                "removed": self.removed, "verify": self.verify.to_json()}


def check_revision_name(revision: str) -> None:
    if not REVISION_DIR_RE.fullmatch(revision) or revision == CURRENT_LINK:
        raise InputError(f"revision must be a plain directory name (letters, digits, '._-'), not {revision!r}")


def read_current(model_dir: Path) -> str | None:
    link = model_dir / CURRENT_LINK
    if link.is_symlink():
        return str(link.readlink())
    if link.exists():
        raise InputError(f"{link} exists but is not a symlink; move it away so it can point at a revision")
    return None


def load_activations(model_dir: Path) -> list[str]:
    """Revisions in activation order, oldest first. Unlike stamps this is state (it decides what may be deleted),
    so a damaged file stops activation instead of being guessed at."""
    path = model_dir / ACTIVATIONS_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}; fix or remove it (nothing is pruned until revisions are "
                         "activated again)") from e
    order = data.get("activations") if isinstance(data, dict) else None
    if not isinstance(order, list) or not all(isinstance(r, str) and REVISION_DIR_RE.fullmatch(r) for r in order):
        raise InputError(f"{path} is malformed; fix or remove it (nothing is pruned until revisions are "
                         "activated again)")
    return order


def save_activations(model_dir: Path, order: list[str]) -> None:
    data = {"activations": order}
    write_atomic(model_dir / ACTIVATIONS_NAME, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def switch_current(model_dir: Path, revision: str) -> None:
    """Point `current` at `revision` with one rename, so a reader always finds the old or the new link."""
    tmp = model_dir / f"{TMP_PREFIX}{CURRENT_LINK}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.symlink_to(revision)
    try:
        tmp.replace(model_dir / CURRENT_LINK)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(model_dir)


def activate_revision(model_dir: Path, revision: str, *, keep: int, jobs: int | None = None,
                      signers: Signers | None = None) -> ActivateResult:
    """Verify MODELDIR/REVISION (and its manifest's signature, given `signers`), make it current, then keep only the
    `keep` most recently activated revisions (the current one counts and is never removed; revisions this tool
    never activated are never touched)."""
    require_dir(model_dir, "model directory")
    check_revision_name(revision)
    if keep < 1:
        raise InputError("--keep must be at least 1 (the current revision is always kept)")
    target = model_dir / revision
    if target.is_symlink() or not target.is_dir():
        raise InputError(f"{target} does not exist or is not a directory; distribute the revision first")
    previous = read_current(model_dir)
    order = load_activations(model_dir)  # read before anything changes, so a damaged file stops us cleanly
    manifest = load_manifest(target, signers)
    _check_manifest_names(model_dir, revision, manifest)
    report = verify_tree(target, jobs=jobs, manifest=manifest)
    if not report.ok:
        first = report.problems[0].describe()
        raise CheckFailed(f"refusing to activate {target}: {len(report.problems)} problem(s), first: {first}",
                          {"verify": report.to_json()})

    if previous != revision:
        switch_current(model_dir, revision)
    new_order = [r for r in order if r != revision] + [revision]
    try:
        kept, removed = _prune(model_dir, new_order, revision, keep)
    finally:
        # Record the activation even if pruning failed part way, and forget revisions that are gone.
        remaining = [r for r in new_order if r == revision or (model_dir / r).is_dir()]
        if remaining != order:
            save_activations(model_dir, remaining)
    return ActivateResult(revision, previous, previous != revision or bool(removed), kept, removed, report)


def _check_manifest_names(model_dir: Path, revision: str, manifest: Manifest) -> None:
    """Catch a revision copied into the wrong place before it is served under the wrong name."""
    if manifest.revision != revision:
        raise CheckFailed(f"{model_dir / revision} holds a manifest for revision {manifest.revision!r}")
    expected_dir = manifest.repo.replace("/", "--")
    if model_dir.name != expected_dir:
        raise CheckFailed(f"{model_dir / revision} holds {manifest.repo}, which belongs in .../{expected_dir}/")


def _prune(model_dir: Path, order: list[str], current: str, keep: int) -> tuple[list[str], list[str]]:
    keep_set = set(order[-keep:]) | {current}
    removed: list[str] = []
    failures: list[str] = []
    for revision in order:
        path = model_dir / revision
        if revision in keep_set or path.is_symlink() or not path.is_dir():
            continue
        try:
            shutil.rmtree(path)
            removed.append(revision)
        except OSError as e:
            failures.append(f"{path}: {e.strerror}")
    kept = [r for r in order if r in keep_set]
    if failures:
        raise CheckFailed(f"activated {current}, but could not remove old revision {failures[0]}",
                          {"removed": removed, "kept": kept})
    return kept, removed



def model_status(model_dir: Path) -> dict[str, Any]:
    """What a model directory holds: `current`, the activation order, each revision's manifest summary, and what the
    last transfer moved. Reads only; a damaged manifest is reported on its revision, not raised."""
    if not model_dir.is_dir():
        return {"model_dir": str(model_dir), "exists": False, "current": None, "activations": [], "revisions": [],
                "last_transfer": None}
    current = read_current(model_dir)
    order = load_activations(model_dir)
    revisions = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        info: dict[str, Any] = {"revision": entry.name, "current": entry.name == current,
                                "activated": entry.name in order, "signed": (entry / SIGNATURE_NAME).is_file()}
        try:
            info.update(read_manifest(entry).summary())
        except NodeToolError as e:
            info["manifest_error"] = str(e)
        revisions.append(info)
    last = model_dir / LAST_TRANSFER_NAME
    try:
        last_transfer = json.loads(last.read_text(encoding="utf-8")) if last.is_file() else None
    except (OSError, ValueError) as e:
        last_transfer = {"error": f"cannot read {last}: {e}"}
    return {"model_dir": str(model_dir), "exists": True, "current": current, "activations": order,
            "revisions": revisions, "last_transfer": last_transfer}
