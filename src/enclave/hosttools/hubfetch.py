#!/usr/bin/env python3
"""Fetch one pinned revision of a model repo with the real huggingface_hub client, on the staging host.

Run by the weights role with the Python of the staging host's hub-client venv, as the unprivileged fetch user in a
transient systemd unit (fetch_hf.yml), never as root and never where the signing key is visible:

    python hubfetch.py --repo ORG/NAME --revision SHA --dest DIR --expect-out FILE [--token-file FILE] [--workers N]
        [--json]

The endpoint (`HF_ENDPOINT`) and the transport switches (`HF_HUB_DISABLE_XET`, ...) come from the environment. The
token comes from `--token-file`, a 0600 file of the fetch user the role writes under no_log and removes afterwards:
never from the environment, which Ansible would put on the remote command line (`ps`, sudo's log, -vvv output).
The client does not check the bytes it downloads (and, from 1.18, does not resume across runs): this script records
the hub's own sizes and LFS sha256 values in `--expect-out`, and `nodetool manifest build --expect-json` refuses any
file that does not match them. Files already complete in DIR are not downloaded again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

# enclave.revision.REVISION_RE (this tool runs alone on the staging host; tests/unit/test_revision_rule.py keeps
# the copies equal)
REVISION_RE = re.compile(r"[0-9a-f]{40}")


def expectations(api: Any, repo: str, revision: str) -> dict[str, dict[str, Any]]:
    """{path: {size, sha256?}} from the hub's tree listing (LFS files carry a sha256, small ones only a git id)."""
    expect: dict[str, dict[str, Any]] = {}
    for item in api.list_repo_tree(repo, revision=revision, recursive=True):
        if getattr(item, "size", None) is None or not hasattr(item, "blob_id"):
            continue  # a folder
        entry: dict[str, Any] = {"size": int(item.size)}
        lfs = getattr(item, "lfs", None)
        if lfs is not None:
            entry["sha256"] = lfs.sha256 if hasattr(lfs, "sha256") else lfs["sha256"]
        expect[item.path] = entry
    return expect


def read_token(path: Path | None) -> str | None:
    """The token in `path` (surrounding whitespace dropped); None without a file: the client's own default."""
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise SystemExit(f"hubfetch: the token file {path} is empty")
    return token


def fetch(repo: str, revision: str, dest: Path, workers: int, token: str | None = None) -> dict[str, Any]:
    from huggingface_hub import HfApi, snapshot_download  # imported late: --help works without the client

    if not REVISION_RE.fullmatch(revision):
        raise SystemExit(f"hubfetch: revision {revision!r} is not a 40-hex commit; pin the exact commit")
    started = time.monotonic()
    api = HfApi(token=token)
    expect = expectations(api, repo, revision)
    if not expect:
        raise SystemExit(f"hubfetch: {repo}@{revision} lists no files")
    before = {p: (dest / p).stat().st_size for p in expect if (dest / p).is_file()}
    complete = {p for p, size in before.items() if size == expect[p]["size"]}
    dest.mkdir(parents=True, exist_ok=True)
    snapshot_download(repo_id=repo, revision=revision, local_dir=str(dest), max_workers=workers, token=token)
    downloaded = sum(expect[p]["size"] for p in expect if p not in complete)
    return {"repo": repo, "revision": revision, "files": len(expect),
            "bytes_total": sum(e["size"] for e in expect.values()), "files_already_complete": len(complete),
            "bytes_downloaded": downloaded, "seconds": round(time.monotonic() - started, 3),
            "endpoint": os.environ.get("HF_ENDPOINT", "https://huggingface.co"), "expect": expect}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubfetch", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--expect-out", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, help="file holding the hub token (never the token itself)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = fetch(args.repo, args.revision, args.dest, args.workers, read_token(args.token_file))
    except Exception as e:  # the client's errors are many types; the message is what the operator needs
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        print(json.dumps({"ok": False, "error": message}) if args.json else f"hubfetch: {message}")
        return 1
    args.expect_out.write_text(json.dumps(result.pop("expect"), indent=1, sort_keys=True))
    print(json.dumps({"ok": True, **result}) if args.json else json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
