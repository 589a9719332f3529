"""The weights tools' errors (a copy of enclave.errors' shape, since that package is not on the hosts):

    NodeToolError          anything reported as one line instead of a traceback
    ├── InputError         bad arguments, a missing or malformed file                -> exit 2
    └── CheckFailed        the data was read but does not match what it should be    -> exit 1
"""

from __future__ import annotations

from typing import Any


class NodeToolError(Exception):
    """Anything the CLI reports as one line. `details` is extra data for `--json` output."""

    exit_code = 2

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class InputError(NodeToolError):
    exit_code = 2


class CheckFailed(NodeToolError):
    exit_code = 1
