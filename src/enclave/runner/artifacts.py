"""Run directories: one private ansible-runner data dir per run under the state dir, kept a while, pruned."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from enclave.errors import UsageError

SUMMARY = "summary.json"
DEFAULT_KEEP = 20


def new_run_dir(runs: Path, label: str) -> Path:
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs / f"{stamp}-{label}-{secrets.token_hex(3)}"
    path.mkdir(mode=0o700)
    return path


def run_dirs(runs: Path) -> list[Path]:
    """Oldest first; names start with a sortable time stamp."""
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))


def prune(runs: Path, keep: int = DEFAULT_KEEP) -> list[Path]:
    doomed = run_dirs(runs)[:-keep] if keep > 0 else run_dirs(runs)
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    target = run_dir / SUMMARY
    target.write_text(json.dumps(summary, indent=2, sort_keys=True))
    target.chmod(0o600)


def read_summary(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / SUMMARY).read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"{run_dir}: no {SUMMARY}; the run did not finish (killed?)") from exc


def find_run(runs: Path, run_id: str | None) -> Path:
    dirs = run_dirs(runs)
    if not dirs:
        raise UsageError(f"no runs recorded under {runs} yet; run `enclave deploy` first")
    if run_id is None:
        return dirs[-1]
    matches = [d for d in dirs if d.name == run_id or d.name.startswith(run_id)]
    if len(matches) != 1:
        known = ", ".join(d.name for d in dirs[-5:])
        raise UsageError(f"run {run_id!r}: {'ambiguous' if matches else 'not found'}; recent runs: {known}")
    return matches[0]


def scrub_command_record(run_dir: Path) -> None:
    """ansible-runner records the whole process environment in artifacts/*/command, which may hold the
    operator's tokens; keep only the command and working directory."""
    for record in run_dir.glob("artifacts/*/command"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if "env" in data:
            record.write_text(json.dumps({"command": data.get("command"), "cwd": data.get("cwd")}))
