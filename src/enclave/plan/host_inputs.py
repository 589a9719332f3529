"""Inventory values that reach a host's file system or a command line: refused before any host is touched.

The kit's directories are created, chowned and (by teardown) removed as the kit's own, so a system directory
there (`enclave_opt_dir: /opt`) would hand the kit someone else's files; a root service user would run the engine
as root. Host names and `ansible_host` end up in file names and command lines on the controller (the gateway's
certificate), so they must be plain host names or IP addresses.
"""

from __future__ import annotations

import ipaddress
import pwd
import re
from pathlib import PurePosixPath
from typing import Any

from enclave.errors import UsageError

# The kit's directories (playbooks/roles/enclave/defaults/main.yml): each is made and owned by the kit.
KIT_DIRS = ("enclave_root", "enclave_models_dir", "enclave_opt_dir", "enclave_etc_dir", "enclave_home")
# Directories that hold other software's files: never a kit directory.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib",  # noqa: S108 - refused names
    "/usr/local", "/usr/sbin", "/usr/share", "/var", "/var/cache", "/var/lib", "/var/log", "/var/opt", "/var/spool",
    "/var/tmp",  # noqa: S108 - a name refused, not a file used
})
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_kit_dir(value: Any, where: str) -> None:
    """An absolute, normalised path that is not a system directory or a user's home."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise UsageError(f"{where} must be an absolute path, got {value!r}")
    parts = PurePosixPath(value).parts
    if ".." in parts or "." in value.split("/"):
        raise UsageError(f"{where} must not contain '.' or '..' components, got {value!r}")
    path = str(PurePosixPath(value))
    if path in SYSTEM_DIRS or (len(parts) == 3 and parts[1] == "home"):
        raise UsageError(f"{where} is {path}, a system directory or a user's home: the kit owns and teardown "
                         "removes its directories, so give it one of its own (e.g. /opt/enclave)")


def check_service_user(value: Any, where: str) -> None:
    """Not root, nor another name for uid 0."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where} must be a user name, got {value!r}")
    if value in {"root", "toor", "0"} or value in _uid0_names():
        raise UsageError(f"{where} is {value!r}, which is root: the engine runs as an unprivileged user "
                         "(the default is enclave)")


def _uid0_names() -> set[str]:
    return {entry.pw_name for entry in pwd.getpwall() if entry.pw_uid == 0}


def is_host_name(value: str) -> bool:
    """An RFC 1123 host name (labels of letters, digits and inner hyphens) or an IP address."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    return 0 < len(value) <= 253 and all(_LABEL.fullmatch(label) for label in value.split("."))


def check_host(host: str, where: str) -> None:
    if not is_host_name(host):
        raise UsageError(f"{where}: host name {host!r} is not an RFC 1123 host name or an IP address (letters, "
                         "digits, '-' and '.'); it names files and certificates on the controller")


def check_address(value: Any, where: str) -> None:
    if not isinstance(value, str) or not is_host_name(value):
        raise UsageError(f"{where} must be an RFC 1123 host name or an IP address, got {value!r}")
