"""Delta kits (`kit build --since OLD`) and applying them (`kit apply-delta OLD DELTA --out NEW`).

A delta carries the new kit's whole signed KIT.json but only the files whose sha256 differ from OLD's, plus
DELTA.json (signed too) naming the sha256 of OLD's KIT.json. Applying takes each listed file from the delta when
it is there, else from OLD (checked against the new manifest either way), so NEW's KIT.json is the same bytes as
a fresh build's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from enclave.errors import UsageError
from enclave.kit import manifest
from enclave.kit.manifest import KitKey, KitRefused, Report
from enclave.kit.verify import verify_kit


def unchanged(old: dict[str, Any], new_files: list[dict[str, Any]]) -> set[str]:
    """Paths whose size and sha256 are the same in OLD's manifest: the files a delta leaves out."""
    before = {f["path"]: (f["size"], f["sha256"]) for f in old["files"]}
    return {f["path"] for f in new_files if before.get(f["path"]) == (f["size"], f["sha256"])}


def prune(root: Path, keep_out: set[str], old_root: Path, key: KitKey) -> dict[str, Any]:
    """Turn the full kit at root into a delta against old_root: drop keep_out, write and sign DELTA.json."""
    for rel in keep_out:
        (root / rel).unlink()
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    info = {"format": manifest.KIT_FORMAT, "base_sha256": manifest.sha256_file(old_root / manifest.MANIFEST),
            "carried": len(manifest.list_files(root)), "left_out": len(keep_out)}
    (root / manifest.DELTA).write_text(manifest.render(info))
    manifest.sign_file(root / manifest.DELTA, key)
    return info


def apply(old: Path, delta: Path, out: Path, signers: str, report: Report) -> dict[str, Any]:
    """Assemble NEW from OLD and DELTA; every file is checked against the delta's signed manifest."""
    if out.exists():
        raise UsageError(f"--out {out}: exists; choose a new directory")
    info = json.loads(manifest.verify_signature(delta / manifest.DELTA, signers))
    verify_kit(old, signers, report)
    base = manifest.sha256_file(old / manifest.MANIFEST)
    if info.get("base_sha256") != base:
        raise KitRefused(f"{delta / manifest.DELTA}: made for a base kit whose KIT.json has sha256 "
                         f"{info.get('base_sha256')}, but {old / manifest.MANIFEST} has {base}")
    document = manifest.load(delta, signers)
    problems = manifest.check_files(delta, document, report, present_only=True)
    if problems:
        raise KitRefused(f"{delta}: " + "; ".join(problems[:20]))
    work = out.with_name(f".{out.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    report(f"assembling {len(document['files'])} files into {out}")
    for entry in document["files"]:
        source = delta / entry["path"] if (delta / entry["path"]).is_file() else old / entry["path"]
        target = work / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    for name in (manifest.MANIFEST, manifest.SIGNATURE, manifest.PUBLIC_KEY, manifest.SUMS):
        shutil.copy2(delta / name, work / name)
    verify_kit(work, signers, report)  # a file of OLD that the delta assumed unchanged but is not: refused here
    work.rename(out)
    return document
