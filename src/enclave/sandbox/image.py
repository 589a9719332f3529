"""The node base image: one cached Debian root that every node boots through its own overlay.

Only what Ansible needs to manage a host goes into the image (systemd, sshd, python3, python3-apt, sudo);
everything the roles install comes from the package repository the controller serves, as it would on a real
air-gapped site.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enclave.locks import file_lock
from enclave.sandbox import system

SUITE = "bookworm"
IMAGE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "iproute2", "sudo",
    "procps", "ca-certificates", "gpgv",
)
# Bump when the post-processing below changes, so old cached images are not reused.
_IMAGE_FORMAT = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def host_debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (the only one an offline site can reach)."""
    candidates: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                if re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M):
                    match = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                    if match:
                        candidates.append(match.group(1))
        else:
            candidates += re.findall(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M)
    debian = [uri for uri in candidates if "security" not in uri]
    return debian[0].rstrip("/") if debian else DEFAULT_MIRROR


@dataclass(frozen=True)
class BaseImage:
    cache: Path
    mirror: str

    @property
    def key(self) -> str:
        recipe = json.dumps([_IMAGE_FORMAT, SUITE, self.mirror, sorted(IMAGE_PACKAGES)]).encode()
        return hashlib.sha256(recipe).hexdigest()[:12]

    @property
    def root(self) -> Path:
        return self.cache / "images" / f"{SUITE}-{self.key}" / "rootfs"

    @property
    def _done_marker(self) -> Path:
        return self.root.parent / "complete"

    def ready(self) -> bool:
        return self._done_marker.is_file()

    def ensure(self, report: Callable[[str], None]) -> Path:
        if self.ready():
            return self.root
        with file_lock(self.root.parent.with_suffix(".lock")):
            if self.ready():
                return self.root
            self._build(report)
        return self.root

    def _build(self, report: Callable[[str], None]) -> None:
        work = self.root.parent.with_name(self.root.parent.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        report(f"building the node base image with debootstrap from {self.mirror} (about a minute, once)")
        started = time.monotonic()
        system.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(IMAGE_PACKAGES),
                    SUITE, work / "rootfs", self.mirror], timeout=1800)
        rootfs = work / "rootfs"
        # Each node gets its own host keys and machine id in its overlay; the image must carry none.
        for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (rootfs / "etc/machine-id").write_text("")
        # Nodes have no route to this mirror; the role replaces the sources with the configured ones.
        (rootfs / "etc/apt/sources.list").write_text(
            "# enclave sandbox image: no sources until the base role configures them\n")
        (work / "complete").write_text(json.dumps({
            "suite": SUITE, "mirror": self.mirror, "packages": list(IMAGE_PACKAGES),
            "built_seconds": round(time.monotonic() - started, 1),
        }))
        shutil.rmtree(self.root.parent, ignore_errors=True)
        work.rename(self.root.parent)
        report(f"node base image ready at {self.root}")

    def dpkg_status(self) -> Path:
        return self.root / "var/lib/dpkg/status"
