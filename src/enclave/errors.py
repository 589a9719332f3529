"""The one error hierarchy of enclave.

    EnclaveError                 anything the CLI reports as one line instead of a traceback
    ├── UsageError               bad arguments or files given by the operator        -> exit 2
    │   └── InventoryError       an inventory that cannot be used                      -> exit 2
    ├── SandboxError             the local sandbox cannot be built, started or read    -> exit 1
    ├── RunError                 ansible-runner could not start or report a run        -> exit 1
    └── AuditError               the controller's audit trail cannot be written         -> exit 1

The core raises these and never prints; the CLI turns them into `Name: message` and an exit code.
"""

from __future__ import annotations


class EnclaveError(Exception):
    exit_code = 1


class UsageError(EnclaveError):
    exit_code = 2


class InventoryError(UsageError):
    """An inventory that cannot be used. `problems` holds one line per finding."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        if len(self.problems) == 1:  # one finding, one line
            return f"{head}: {self.problems[0]}"
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class SandboxError(EnclaveError):
    pass


class RunError(EnclaveError):
    pass


class AuditError(EnclaveError):
    """A verb ran but its audit record could not be written: the operator must know the trail has a gap."""
