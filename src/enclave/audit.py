"""The controller's audit trail: one JSON line per state-changing verb (deploy, update, rollback, drain, undrain,
teardown, weights sync and import), appended to `paths.audit_log()`.

A record says who (user, and the sudo user behind root; the controller's host name), when (UTC), which inventory
(its path, and its git commit when it sits in a git checkout), the verb's arguments with secrets redacted, the
result (ok/failed and the exit code) and the ids of the playbook runs it started (`enclave logs RUN`).

Append-only: each record is one write(2) on a descriptor opened with O_APPEND, so records of verbs running at the
same time never interleave (a regular file's appends are atomic for one write), and nothing here ever rewrites
the file. The file is 0600 in a 0700 directory: arguments name hosts and inventory paths.

Secrets: an argument or extra variable whose name is token-, password-, secret- or key-like is written as
"<redacted>" (nested JSON mappings too), and the values of such environment variables (HF_TOKEN, ...) are
scrubbed from the line whatever argument carried them. The environment itself is never recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import getpass
import json
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from enclave import paths
from enclave.errors import AuditError

REDACTED = "<redacted>"
# Names whose values are never written: API keys, tokens, passwords, vault material, credentials.
_SECRET_NAME = re.compile(r"token|passw|secret|key|credential|auth|vault|cookie|private", re.IGNORECASE)
_MIN_SECRET = 6  # shorter environment values are too common to scrub (a "1", "true")

P = ParamSpec("P")
R = TypeVar("R")

# The playbook runs of the verb being recorded (runner.driver notes each one).
_runs: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("enclave_audit_runs", default=None)


def note_run(run_id: str) -> None:
    """Called by the driver for every playbook run: the current verb's record lists it."""
    runs = _runs.get()
    if runs is not None:
        runs.append(run_id)


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact(value: Any, name: str = "") -> Any:
    """`value` with every secret-named entry replaced, recursively (mappings, lists, KEY=VALUE strings)."""
    if name and secret_name(name) and not isinstance(value, bool | type(None) | Path):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, name) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return _redact_text(value)
    return value


def _redact_text(text: str) -> str:
    """An extra-vars argument: a JSON/YAML mapping, or KEY=VALUE; @FILE and plain words pass."""
    if text.lstrip().startswith("{"):
        try:
            return json.dumps(redact(json.loads(text)), sort_keys=True)
        except ValueError:
            return REDACTED  # not JSON (YAML flow mapping?): it may hold anything
    key, sep, _ = text.partition("=")
    if sep and secret_name(key):
        return f"{key}={REDACTED}"
    return text


def _env_secrets() -> list[str]:
    return sorted({v for k, v in os.environ.items() if secret_name(k) and len(v) >= _MIN_SECRET},
                  key=len, reverse=True)


def _who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    who = {"user": user, "host": socket.gethostname()}
    if os.environ.get("SUDO_USER"):
        who["sudo_user"] = os.environ["SUDO_USER"]
    return who


def inventory_commit(inventory: Path | None) -> dict[str, Any]:
    """The git commit of the checkout holding the inventory (and whether it has uncommitted changes); {} outside
    git, or when git is missing or slow."""
    if inventory is None:
        return {}
    where = inventory if inventory.is_dir() else inventory.parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
        if head.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--", str(inventory)],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def make_record(verb: str, arguments: dict[str, Any], *, exit_code: int, runs: list[str],
                when: dt.datetime | None = None) -> dict[str, Any]:
    inventory = arguments.get("inventory")
    path = Path(inventory).expanduser().resolve() if isinstance(inventory, str | Path) else None
    return {
        "time": (when or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **_who(), "verb": verb,
        "inventory": str(path) if path else None, **inventory_commit(path),
        "arguments": {k: redact(v, k) for k, v in sorted(arguments.items())},
        "result": "ok" if exit_code == 0 else "failed", "exit_code": exit_code, "runs": list(runs),
    }


def append(record: dict[str, Any], log: Path | None = None) -> Path:
    """One line, one write, O_APPEND: safe beside other writers; secret environment values scrubbed."""
    log = log or paths.audit_log()
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.parent.chmod(0o700)  # an older or hand-made directory too: records name hosts and inventories
    line = json.dumps(record, sort_keys=True, separators=(",", ":"))
    for value in _env_secrets():
        line = line.replace(json.dumps(value)[1:-1], REDACTED)
    data = (line + "\n").encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):  # a full disk: say so rather than leave half a record unnoticed
        raise OSError(f"{log}: only {written} of {len(data)} bytes of an audit record written")
    return log


def _exit_code(exc: BaseException) -> int:
    """The exit code an exception ends the verb with: typer/click's Exit and SystemExit carry one, the kit's
    errors their class's; anything else is a crash (1)."""
    code = getattr(exc, "exit_code", None)
    if code is None and isinstance(exc, SystemExit):
        code = exc.code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return code if isinstance(code, int) else (0 if code is None and isinstance(exc, SystemExit) else 1)


@contextlib.contextmanager
def recording(verb: str, arguments: dict[str, Any]) -> Iterator[None]:
    """Record `verb` when it ends, however it ends (the exception, if any, goes on)."""
    runs: list[str] = []
    token = _runs.set(runs)
    code = 0
    try:
        yield
    except BaseException as exc:
        code = _exit_code(exc)
        raise
    finally:
        _runs.reset(token)
        try:
            append(make_record(verb, arguments, exit_code=code, runs=runs))
        except OSError as exc:
            raise AuditError(f"{verb} ended with exit code {code}, but its audit record could not be written to "
                             f"{paths.audit_log()}: {exc.strerror or exc}") from exc


def audited(verb: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a state-changing verb: its keyword arguments (the CLI's options) and its outcome are recorded.
    Inside the CLI's error reporting: the kit's errors carry their exit code here, and an AuditError is reported
    as one line like any other."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with recording(verb, dict(kwargs)):
                return func(*args, **kwargs)

        return wrapper

    return decorate


def read(log: Path | None = None, *, since: dt.datetime | None = None, verb: str | None = None) -> list[dict[str, Any]]:
    """The records, oldest first; a line that is not JSON (a crash mid-write on another system) is skipped."""
    log = log or paths.audit_log()
    if not log.is_file():
        return []
    records = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if verb and record.get("verb") != verb:
            continue
        if since and _when(record) < since:
            continue
        records.append(record)
    return records


def _when(record: dict[str, Any]) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
