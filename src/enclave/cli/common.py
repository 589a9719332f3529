"""What every verb shares: consoles, error reporting, Ansible's own options (defined once), inventory choice."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from enclave.errors import EnclaveError, UsageError
from enclave.plan.inventory import Inventory, load_yaml
from enclave.runner.inventory import validate
from enclave.sandbox import DEFAULT_NAME, Sandbox
from enclave.vault_password import vault_password_file

console = Console()
err = Console(stderr=True)

# Set once by the top-level callback; the CLI runs one command per process.
debug_mode = {"on": False}
# What a verb holds for its own duration (an asked vault password's file): released when the verb ends, however.
_held = contextlib.ExitStack()

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the kit's errors into one line on stderr and their exit code; tracebacks only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with _held:
                return func(*args, **kwargs)
        except EnclaveError as exc:
            if debug_mode["on"]:
                raise
            # Text, not markup: messages quote paths and output that may contain [brackets].
            err.print(Text.assemble((type(exc).__name__, "bold red"), f": {exc}"), soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


# -- Ansible's options, shared by every verb that runs a playbook -------------------------------------------
InventoryOpt = Annotated[Path | None, typer.Option(
    "--inventory", "-i", help="Inventory file or directory. Default: the sandbox's, when one is up.",
    show_default=False)]
CheckOpt = Annotated[bool, typer.Option("--check", "-C", help="Report what would change; change nothing.")]
DiffOpt = Annotated[bool, typer.Option("--diff", "-D", help="Show the changes made to files.")]
LimitOpt = Annotated[str | None, typer.Option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")]
TagsOpt = Annotated[list[str] | None, typer.Option("--tags", "-t", help="Only roles/tasks with these tags.")]
SkipTagsOpt = Annotated[list[str] | None, typer.Option("--skip-tags", help="Skip roles/tasks with these tags.")]
ExtraVarsOpt = Annotated[list[str] | None, typer.Option(
    "--extra-vars", "-e", help="KEY=VALUE, a JSON/YAML mapping, or @FILE. Repeatable. Never shown in logs.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More Ansible output in the logs.")]
VaultFileOpt = Annotated[Path | None, typer.Option(
    "--vault-password-file", help="File holding the vault password (for vault-encrypted inventory variables).")]
AskVaultOpt = Annotated[bool, typer.Option(
    "--ask-vault-pass", help="Ask for the vault password at the terminal (kept in a private file for this run only).")]


def use_vault(given: Path | None, ask: bool) -> Path | None:
    """The run's vault password file (asked for now with --ask-vault-pass); every Ansible tool of this run reads it,
    and an asked one is removed when the verb ends."""
    return _held.enter_context(vault_password_file(given, ask))


def split_list(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())


def parse_extra_vars(values: list[str] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for raw in values or []:
        if raw.startswith("@"):
            # bounded like an inventory file: size, binary content, YAML aliases; errors name the file
            data = load_yaml(Path(raw[1:]).expanduser(), label="--extra-vars @")
        elif raw.lstrip().startswith("{"):
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise UsageError(f"--extra-vars: not valid JSON ({exc})") from None
        elif "=" in raw:
            key, _, value = raw.partition("=")
            if not key.strip().isidentifier():
                raise UsageError(f"--extra-vars: {key.strip()!r} is not a variable name")
            data = {key.strip(): value}
        else:
            raise UsageError(f"--extra-vars {raw!r}: expected KEY=VALUE, a JSON mapping or @FILE")
        if not isinstance(data, dict):
            raise UsageError(f"--extra-vars {raw[:40]!r}: expected a mapping of variables")
        merged.update(data)
    return merged


def resolve_inventory(given: Path | None) -> Path:
    """The operator's inventory, or the default sandbox's when none is given and one is up."""
    if given is not None:
        return given.expanduser().resolve()
    sandbox = Sandbox(DEFAULT_NAME)
    if sandbox.inventory_path.is_file():
        err.print(f"using the sandbox inventory {sandbox.inventory_path} (pass -i to choose another)",
                  highlight=False)
        return sandbox.inventory_path
    raise UsageError("no inventory: pass -i INVENTORY, or run `enclave sandbox up` to make a local sandbox")


def open_inventory(given: Path | None, vault_password_file: Path | None, ask_vault_pass: bool,
                   **checks: Any) -> tuple[Path, Inventory, Path | None]:
    """What a verb that reads the inventory does first: which inventory (resolve_inventory), the run's vault password
    file (use_vault), then the inventory validated with it (enclave.runner.inventory.validate, given `checks`).
    Returns (path, inventory, vault password file)."""
    path = resolve_inventory(given)
    vault = use_vault(vault_password_file, ask_vault_pass)
    return path, validate(path, vault_password_file=vault, **checks), vault
