"""Building the ansible-playbook arguments for a request: a pure function, tested without running anything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PlaybookRequest:
    playbook: str  # a file name under playbooks/, e.g. "site.yml"
    inventory: Path
    check: bool = False
    diff: bool = False
    limit: str | None = None
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    verbosity: int = 0
    flush_cache: bool = False
    vault_password_file: Path | None = None


def playbook_args(request: PlaybookRequest, extra_vars_file: Path | None) -> list[str]:
    """ansible-playbook options for `request`. Extra vars travel as a file: values on a command line
    show in `ps` and in runner's recorded command, and extra vars may be secrets."""
    args: list[str] = []
    if request.check:
        args.append("--check")
    if request.diff:
        args.append("--diff")
    if request.limit:
        args += ["--limit", request.limit]
    if request.tags:
        args += ["--tags", ",".join(request.tags)]
    if request.skip_tags:
        args += ["--skip-tags", ",".join(request.skip_tags)]
    if request.flush_cache:
        args.append("--flush-cache")
    if request.vault_password_file:
        args += ["--vault-password-file", str(request.vault_password_file)]
    if extra_vars_file is not None:
        args += ["--extra-vars", f"@{extra_vars_file}"]
    if request.verbosity:
        args.append("-" + "v" * min(request.verbosity, 4))
    return args
